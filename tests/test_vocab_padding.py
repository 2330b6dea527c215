"""`qarac.vocab_padding`: the LM head's product padded in compute only. Losses,
logits and every gradient equal with and without padding; parameters untouched."""

from __future__ import annotations

import pytest
import torch

import qarac.vocab_padding as vocab_padding
from qarac import QaracLoss, QaracTrainerModel
from qarac.vocab_padding import PaddedVocabLinear, pad_vocabulary_products, padding_multiple_for
from model_helpers import VOCAB, tiny_config, trainer_batch


def losses_and_gradients(model: QaracTrainerModel, dtype: torch.dtype):
    """(losses, logits, gradients by name) of one forward + backward on a fixed padded batch."""
    inputs, targets = trainer_batch(batch=3, length=7)
    model.zero_grad(set_to_none=True)
    outputs = model(inputs)
    losses = QaracLoss(model.config)(outputs, targets)
    losses.total.backward()
    gradients = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return losses.as_dict(), outputs.encode_decode.detach().clone(), gradients


def model_in(dtype: torch.dtype) -> QaracTrainerModel:
    torch.manual_seed(0)
    return QaracTrainerModel(tiny_config()).to(dtype).eval()  # eval: no dropout, so two runs compare


def test_losses_logits_and_gradients_unchanged():
    """Vocabulary 99 is padded to 128: 29 zero rows. Tolerance: 1e-6 relative to each tensor's
    largest magnitude (float32's epsilon is 1.2e-7; measured: bit-identical here); the padded
    rows, were they visible, would move the losses by ~1e-1."""
    dtype, rtol = torch.float32, 1e-6
    assert VOCAB % 64 != 0
    model = model_in(dtype)
    state_before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    plain_losses, plain_logits, plain_gradients = losses_and_gradients(model, dtype)
    assert pad_vocabulary_products(model, 64) == 1  # the decoder's head (the trainer has one decoder)
    head = model.decoder.decoder_head.head
    assert isinstance(head.decoder, PaddedVocabLinear)
    assert head.decoder.weight is model.decoder.decoder.embeddings.word_embeddings.weight  # still tied
    assert head.decoder.bias is head.bias
    padded_losses, padded_logits, padded_gradients = losses_and_gradients(model, dtype)
    assert padded_logits.shape == plain_logits.shape and padded_logits.shape[-1] == VOCAB
    print("padded vs plain: logits max |diff|", float((padded_logits - plain_logits).abs().max()),
          "gradients max |diff|", max(float((padded_gradients[n] - plain_gradients[n]).abs().max())
                                      for n in plain_gradients))
    torch.testing.assert_close(padded_logits, plain_logits, rtol=0, atol=rtol * float(plain_logits.abs().max()))
    for name in plain_losses:
        torch.testing.assert_close(padded_losses[name], plain_losses[name], rtol=rtol, atol=0)
    assert padded_gradients.keys() == plain_gradients.keys()
    for name in plain_gradients:
        scale = float(plain_gradients[name].abs().max())
        torch.testing.assert_close(padded_gradients[name], plain_gradients[name], rtol=0, atol=rtol * scale,
                                   msg=name)
    # In compute only: the checkpoint (state dict) has the same names, shapes and values.
    state_after = model.state_dict()
    assert state_after.keys() == state_before.keys()
    assert all(torch.equal(state_after[name], state_before[name]) for name in state_before)


def test_planted_wrong_slice_is_caught(monkeypatch):
    """Cutting the logits from the wrong end keeps the shape but must fail the loss comparison."""
    model = model_in(torch.float32)
    plain_losses, _, _ = losses_and_gradients(model, torch.float32)
    pad_vocabulary_products(model, 64)

    def wrong_end(self, x):
        extra = -self.out_features % self.multiple
        weight = torch.nn.functional.pad(self.weight, (0, 0, 0, extra))
        return torch.nn.functional.linear(x, weight, torch.nn.functional.pad(self.bias, (0, extra)))[..., extra:]

    monkeypatch.setattr(vocab_padding.PaddedVocabLinear, "forward", wrong_end)
    planted_losses, _, _ = losses_and_gradients(model, torch.float32)
    assert not torch.allclose(planted_losses["encode_decode"], plain_losses["encode_decode"], rtol=1e-6, atol=0)


def test_training_pads_on_cuda_only_unless_asked():
    assert padding_multiple_for("cuda", None) == 64
    assert padding_multiple_for("cpu", None) == 1
    assert padding_multiple_for("cpu", 64) == 64
    with pytest.raises(ValueError, match=">= 1"):
        pad_vocabulary_products(model_in(torch.float32), 0)
