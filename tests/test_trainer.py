"""Trainer outputs against independent computations; the loss; gradient flow."""

import numpy as np
import pytest
import torch

from model_helpers import tiny_config, trainer_batch
from qarac import QaracLoss, QaracTrainerModel


def make_trainer(config, seed=0):
    torch.manual_seed(seed)
    return QaracTrainerModel(config).eval()


def test_outputs_are_the_four_objectives(config):
    trainer = make_trainer(config)
    inputs, _ = trainer_batch()
    with torch.no_grad():
        out = trainer(inputs)
        encode = lambda name, enc=trainer.answer_encoder: enc(inputs[name].input_ids, inputs[name].attention_mask)
        question = trainer.question_encoder(inputs["question"].input_ids, inputs["question"].attention_mask)
        s0, s1 = encode("statement0").numpy(), encode("statement1").numpy()
        reasoning = trainer.decoder(encode("proposition0") + encode("proposition1"),
                                    inputs["conclusion_offset"].input_ids, inputs["conclusion_offset"].attention_mask)
    torch.testing.assert_close(out.question_answering, question - encode("answer"))
    cosine = (s0 * s1).sum(-1) / np.linalg.norm(s0, axis=-1) / np.linalg.norm(s1, axis=-1)
    np.testing.assert_allclose(out.consistency.numpy(), cosine, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.reasoning, reasoning)
    assert out.encode_decode.shape == (3, 7, config.vocab_size)


def numpy_cross_entropy(logits, ids, mask, ignore_padding):
    logits = logits.astype(np.float64)
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    picked = -np.take_along_axis(log_probs, ids[..., None], -1)[..., 0]
    if ignore_padding:
        return (picked * mask).sum() / mask.sum()
    return picked.mean()


@pytest.mark.parametrize("legacy", [False, True])
def test_loss_matches_numpy(legacy):
    config = tiny_config().legacy() if legacy else tiny_config()
    trainer = make_trainer(config)
    inputs, targets = trainer_batch()
    with torch.no_grad():
        out = trainer(inputs)
        loss = QaracLoss(config)(out, targets)
    for name in ("encode_decode", "reasoning"):
        want = numpy_cross_entropy(getattr(out, name).numpy(), targets[name].input_ids.numpy(),
                                   targets[name].attention_mask.numpy(), ignore_padding=not legacy)
        assert float(getattr(loss, name)) == pytest.approx(want, rel=1e-5)
    assert float(loss.question_answering) == pytest.approx(float((out.question_answering.double() ** 2).mean()), rel=1e-5)
    assert float(loss.consistency) == pytest.approx(
        float(((out.consistency.double() - targets["consistency"].double()) ** 2).mean()), rel=1e-5)
    parts = loss.encode_decode + loss.question_answering + loss.reasoning + loss.consistency
    assert float(loss.total) == pytest.approx(float(parts), rel=1e-6)


def test_padding_counts_in_legacy_cross_entropy_only(config):
    trainer = make_trainer(config)
    inputs, targets = trainer_batch(padded=True)
    with torch.no_grad():
        out = trainer(inputs)
        fixed = QaracLoss(config)(out, targets)
        legacy = QaracLoss(config.replace(loss_ignores_padding=False))(out, targets)
    assert abs(float(fixed.encode_decode) - float(legacy.encode_decode)) > 1e-4
    assert float(fixed.question_answering) == float(legacy.question_answering)


def gradients_after_one_backward(config):
    trainer = make_trainer(config)
    inputs, targets = trainer_batch()
    QaracLoss(config)(trainer(inputs), targets).total.backward()
    return dict(trainer.named_parameters())


def test_default_trainer_every_parameter_gets_a_finite_nonzero_gradient(config):
    for name, parameter in gradients_after_one_backward(config).items():
        assert parameter.grad is not None, f"{name} received no gradient"
        assert bool(torch.isfinite(parameter.grad).all()), f"{name} has a non-finite gradient"
        assert bool(parameter.grad.abs().sum() > 0), f"{name} has an all-zero gradient"


def test_legacy_trainer_only_the_pooler_gets_no_gradient(legacy_config):
    parameters = gradients_after_one_backward(legacy_config)
    without = sorted(name for name, parameter in parameters.items() if parameter.grad is None)
    assert without == [
        "decoder.decoder.pooler.dense.bias",
        "decoder.decoder.pooler.dense.weight",
        "question_encoder.encoder.pooler.dense.bias",  # the shared base, named once
        "question_encoder.encoder.pooler.dense.weight",
    ]
    # In PyTorch the legacy preset's local projections do get a gradient: that loss was Keras-specific.
    assert parameters["answer_encoder.head.local_projection"].grad.abs().sum() > 0
    assert parameters["question_encoder.head.local_projection"].grad.abs().sum() > 0


def test_missing_input_is_named(config):
    inputs, _ = trainer_batch()
    del inputs["statement1"]
    with pytest.raises(KeyError, match="statement1"):
        make_trainer(config)(inputs)
