"""The trainer's batched path (one shared-base forward, one decoder forward)
against its per-call path: same outputs and same gradients within float tolerance."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model_helpers import random_tokens, tiny_config
from qarac import INPUT_NAMES, QaracLoss, QaracTrainerModel

# Float32 sums taken over differently padded tensors (and SDPA kernels picked per shape) round differently.
ATOL = 1e-5
RTOL = 1e-4
BATCH = 3
DECODER_TARGETS = {"offset_text": "encode_decode", "conclusion_offset": "reasoning"}


def trainer_pair(config, seed=0):
    """(batched, per-call) trainers holding the same weights, in eval mode (no dropout)."""
    torch.manual_seed(seed)
    batched = QaracTrainerModel(config.replace(batched_calls=True)).eval()
    per_call = QaracTrainerModel(config.replace(batched_calls=False)).eval()
    per_call.load_state_dict(batched.state_dict())
    return batched, per_call


def ragged_batch(lengths, row_lengths, seed=0):
    """Inputs and targets where every field has its own length and rows are padded within it.

    Args:
        lengths: field name -> T of that field.
        row_lengths: field name -> real tokens per row (each >= 1, <= T).
    """
    inputs = {name: random_tokens(BATCH, lengths[name], row_lengths[name], seed + i)
              for i, name in enumerate(INPUT_NAMES)}
    targets = {target: random_tokens(BATCH, lengths[name], row_lengths[name], seed + 100 + i)
               for i, (name, target) in enumerate(DECODER_TARGETS.items())}
    targets["consistency"] = torch.tensor([1.0, 0.0, -1.0])
    return inputs, targets


def outputs_and_gradients(trainer, inputs, targets):
    trainer.zero_grad(set_to_none=True)
    outputs = trainer(inputs)
    QaracLoss(trainer.config)(outputs, targets).total.backward()
    gradients = {name: p.grad for name, p in trainer.named_parameters() if p.grad is not None}
    return {name: value.detach() for name, value in outputs.as_dict().items()}, gradients


def assert_paths_agree(batched, per_call, inputs, targets):
    assert batched.uses_batched_calls and not per_call.uses_batched_calls
    got_outputs, got_gradients = outputs_and_gradients(batched, inputs, targets)
    want_outputs, want_gradients = outputs_and_gradients(per_call, inputs, targets)
    for name, want in want_outputs.items():
        torch.testing.assert_close(got_outputs[name], want, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")
    assert sorted(got_gradients) == sorted(want_gradients)
    for name, want in want_gradients.items():
        torch.testing.assert_close(got_gradients[name], want, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")


# Every field a different length, the decoder seeds shorter and longer than the encoder inputs.
LENGTHS = {"all_text": 9, "offset_text": 8, "question": 4, "answer": 11, "proposition0": 5,
           "proposition1": 7, "conclusion_offset": 12, "statement0": 6, "statement1": 3}


def padded_rows(length):
    return [length, max(1, length - 2), 1]


@pytest.mark.parametrize("loss_ignores_padding", [True, False])
def test_batched_path_matches_per_call_path(loss_ignores_padding):
    batched, per_call = trainer_pair(tiny_config(loss_ignores_padding=loss_ignores_padding))
    inputs, targets = ragged_batch(LENGTHS, {name: padded_rows(n) for name, n in LENGTHS.items()})
    assert_paths_agree(batched, per_call, inputs, targets)


def test_batched_path_matches_on_equal_lengths_without_padding():
    batched, per_call = trainer_pair(tiny_config())
    lengths = dict.fromkeys(INPUT_NAMES, 6)
    inputs, targets = ragged_batch(lengths, {name: [6] * BATCH for name in INPUT_NAMES})
    assert_paths_agree(batched, per_call, inputs, targets)


def test_batched_outputs_keep_each_inputs_length():
    batched, _ = trainer_pair(tiny_config())
    inputs, _ = ragged_batch(LENGTHS, {name: padded_rows(n) for name, n in LENGTHS.items()})
    with torch.no_grad():
        outputs = batched(inputs)
    assert outputs.encode_decode.shape == (BATCH, LENGTHS["offset_text"], batched.config.vocab_size)
    assert outputs.reasoning.shape == (BATCH, LENGTHS["conclusion_offset"], batched.config.vocab_size)
    assert outputs.question_answering.shape == (BATCH, batched.config.hidden_size)
    assert outputs.consistency.shape == (BATCH,)


@pytest.mark.parametrize("option", ["pooling_masks_padding", "causal_decoder_head"])
def test_padding_visible_semantics_take_the_per_call_path(option):
    assert not QaracTrainerModel(tiny_config(**{option: False})).uses_batched_calls
    assert not QaracTrainerModel(tiny_config().legacy()).uses_batched_calls
    assert QaracTrainerModel(tiny_config()).uses_batched_calls


def test_batched_path_names_the_bad_input():
    batched, _ = trainer_pair(tiny_config())
    inputs, _ = ragged_batch(LENGTHS, {name: padded_rows(n) for name, n in LENGTHS.items()})
    inputs["statement1"].input_ids[0, 0] = 10_000
    with pytest.raises(ValueError, match="statement1"):
        batched(inputs)


_PAIR = {}


def shared_pair():
    """One pair for every hypothesis example (building trainers dominates the test's time)."""
    if not _PAIR:
        _PAIR["pair"] = trainer_pair(tiny_config(), seed=1)
    return _PAIR["pair"]


@st.composite
def field_lengths(draw):
    """Per field a length 1..10 and per row a real-token count 1..length (>= 1 real token per row)."""
    lengths = {name: draw(st.integers(1, 10)) for name in INPUT_NAMES}
    rows = {name: [draw(st.integers(1, n)) for _ in range(BATCH)] for name, n in lengths.items()}
    return lengths, rows


@settings(max_examples=15, deadline=None)
@given(field_lengths(), st.integers(0, 2**16))
def test_batched_path_matches_for_any_lengths(lengths_and_rows, seed):
    lengths, rows = lengths_and_rows
    inputs, targets = ragged_batch(lengths, rows, seed)
    assert_paths_agree(*shared_pair(), inputs, targets)
