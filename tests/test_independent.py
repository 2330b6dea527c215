"""The decoder head and the trainer's gradients against independent computations.

The decoder head is written out in float64 numpy from docs/legacy.md §1.3 (RoBERTa layer:
multi-head self-attention, residual + layer norm, exact GELU feed-forward,
residual + layer norm; LM head: dense, GELU, layer norm, tied output matrix);
the trainer's gradients are checked against float64 central finite
differences of its own loss. Both catch bugs the port's other fast tests do
not (a dropped position, a layer-norm epsilon, an untied LM head, a blocked
padding-row gradient).
"""

import math

import numpy as np
import pytest
import torch

from model_helpers import tiny_config, trainer_batch
from qarac import QaracLoss, QaracTrainerModel
from qarac.heads import QaracDecoderHead

_erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * weight + bias


def _w(module):
    return {name: p.detach().double().numpy() for name, p in module.named_parameters()}


def numpy_roberta_layer(x, w, heads, eps, allowed):
    """One post-norm RoBERTa layer; `allowed` (B, T, T) says which keys each query may see."""
    batch, length, hidden = x.shape
    size = hidden // heads

    def split(y):  # (B, T, H) -> (B, heads, T, size)
        return y.reshape(batch, length, heads, size).transpose(0, 2, 1, 3)

    q = split(x @ w["attention.self.query.weight"].T + w["attention.self.query.bias"])
    k = split(x @ w["attention.self.key.weight"].T + w["attention.self.key.bias"])
    v = split(x @ w["attention.self.value.weight"].T + w["attention.self.value.bias"])
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size)  # (B, heads, T, T)
    scores = np.where(allowed[:, None], scores, -np.inf)
    probabilities = np.exp(scores - scores.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    context = (probabilities @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
    attended = layer_norm(context @ w["attention.output.dense.weight"].T + w["attention.output.dense.bias"] + x,
                          w["attention.output.LayerNorm.weight"], w["attention.output.LayerNorm.bias"], eps)
    inner = gelu(attended @ w["intermediate.dense.weight"].T + w["intermediate.dense.bias"])
    return layer_norm(inner @ w["output.dense.weight"].T + w["output.dense.bias"] + attended,
                      w["output.LayerNorm.weight"], w["output.LayerNorm.bias"], eps)


def numpy_decoder_head(head, embeddings, vector, states, mask, causal, eps, heads):
    """docs/legacy.md §1.3: prepend the vector, layer_0, drop position 0, layer_1, LM head tied to `embeddings`."""
    batch, length, _ = states.shape

    def allowed(n, key_mask):
        grid = np.ones((batch, n, n), dtype=bool)
        if key_mask is not None:
            grid &= key_mask.astype(bool)[:, None, :]
        if causal:
            grid &= np.tril(np.ones((n, n), dtype=bool))[None]
        return grid | np.eye(n, dtype=bool)[None]

    mask_0 = None if not causal else np.concatenate([np.ones((batch, 1)), mask], axis=1)
    extended = np.concatenate([vector[:, None], states], axis=1)  # (B, T+1, H)
    extended = numpy_roberta_layer(extended, _w(head.layer_0), heads, eps, allowed(length + 1, mask_0))
    dropped = extended[:, 1:]  # the prepended vector's position goes
    out = numpy_roberta_layer(dropped, _w(head.layer_1), heads, eps, allowed(length, None if not causal else mask))
    lm = _w(head.head)
    x = layer_norm(gelu(out @ lm["dense.weight"].T + lm["dense.bias"]), lm["layer_norm.weight"],
                   lm["layer_norm.bias"], eps)
    return x @ embeddings.T + lm["bias"]


@pytest.mark.parametrize("causal", [False, True], ids=["legacy", "causal"])
def test_decoder_head_matches_numpy_formula(causal):
    config = tiny_config(causal_decoder_head=causal)
    torch.manual_seed(3)
    embeddings = torch.nn.Embedding(config.vocab_size, config.hidden_size)
    head = QaracDecoderHead(config, embeddings).eval()
    rng = np.random.default_rng(0)
    # Rows of very different scales: at 1e-3 (variance 1e-6) the layer norms' epsilon (1e-5) dominates.
    scale = np.array([1.0, 3.0, 1e-3])
    vector = rng.normal(size=(3, 32)) * scale[:, None]
    states = rng.normal(size=(3, 6, 32)) * scale[:, None, None]
    mask = np.array([[1] * 6, [1] * 4 + [0] * 2, [1] * 5 + [0]])
    with torch.no_grad():
        got = head(torch.tensor(vector, dtype=torch.float32), torch.tensor(states, dtype=torch.float32),
                   torch.tensor(mask)).double().numpy()
    want = numpy_decoder_head(head, embeddings.weight.detach().double().numpy(), vector, states, mask, causal,
                              config.base["layer_norm_eps"], config.base["num_attention_heads"])
    real = mask.astype(bool) if causal else np.ones_like(mask, dtype=bool)  # causal: padding queries are free
    assert np.abs(got - want)[real].max() < 1e-5 * max(1.0, np.abs(want).max())


# --- trainer gradients against finite differences --------------------------------------------

def _float64_trainer(config):
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # HF builds its causal mask in the default dtype
    try:
        torch.manual_seed(5)
        return QaracTrainerModel(config).double().eval(), before
    except Exception:
        torch.set_default_dtype(before)
        raise


# Elements probed: the pad row of both word embeddings (the legacy lets padding reach the loss),
# the tied LM output matrix (through the decoder's embeddings), a decoder-head layer norm, both
# pooling projections and a base attention weight.
PROBES = [
    ("question_encoder.encoder.embeddings.word_embeddings.weight", (1, 3)),
    ("decoder.decoder.embeddings.word_embeddings.weight", (1, 5)),
    ("decoder.decoder.embeddings.word_embeddings.weight", (7, 2)),
    ("decoder.decoder_head.layer_1.output.LayerNorm.weight", (4,)),
    ("decoder.decoder_head.head.dense.weight", (2, 9)),
    ("answer_encoder.head.local_projection", (3, 1)),
    ("question_encoder.head.global_projection", (0, 4)),
    ("question_encoder.encoder.encoder.layer.1.attention.self.query.weight", (5, 6)),
]


def reference_loss(outputs, targets, ignore_padding: bool) -> float:
    """docs/legacy.md §1.4's total loss in float64, written out apart from QaracLoss (which casts to float32)."""
    def cross_entropy(logits, tokens):
        log_p = torch.log_softmax(logits.double(), dim=-1)
        picked = -log_p.gather(-1, tokens.input_ids[..., None])[..., 0]  # (B, T)
        if not ignore_padding:
            return picked.mean()
        weights = tokens.attention_mask.double()
        return (picked * weights).sum() / weights.sum()

    total = cross_entropy(outputs.encode_decode, targets["encode_decode"])
    total = total + cross_entropy(outputs.reasoning, targets["reasoning"])
    total = total + outputs.question_answering.double().pow(2).mean()
    total = total + (outputs.consistency.double() - targets["consistency"].double()).pow(2).mean()
    return float(total)


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "default"])
def test_trainer_gradients_match_finite_differences(legacy):
    config = tiny_config().legacy() if legacy else tiny_config()
    model, before = _float64_trainer(config)
    try:
        inputs, targets = trainer_batch(3, 7, padded=True, seed=4)
        loss_fn = QaracLoss(config)
        model.zero_grad(set_to_none=True)
        loss_fn(model(inputs), targets).total.backward()
        parameters = dict(model.named_parameters(remove_duplicate=False))
        step = 1e-5
        for name, index in PROBES:
            parameter = parameters[name]
            analytic = 0.0 if parameter.grad is None else float(parameter.grad[index])
            with torch.no_grad():
                original = float(parameter[index])
                parameter[index] = original + step
                plus = reference_loss(model(inputs), targets, config.loss_ignores_padding)
                parameter[index] = original - step
                minus = reference_loss(model(inputs), targets, config.loss_ignores_padding)
                parameter[index] = original
            numeric = (plus - minus) / (2 * step)
            assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-8), name
    finally:
        torch.set_default_dtype(before)


def test_finite_differences_see_the_legacy_pad_row():
    """The probe is not vacuous: in the legacy preset padding reaches the loss through the pad row."""
    config = tiny_config().legacy()
    model, before = _float64_trainer(config)
    try:
        inputs, targets = trainer_batch(3, 7, padded=True, seed=4)
        loss = QaracLoss(config)(model(inputs), targets).total
        loss.backward()
        grad = model.decoder.decoder.embeddings.word_embeddings.weight.grad
        assert float(grad[config.pad_token_id].abs().max()) > 1e-6
    finally:
        torch.set_default_dtype(before)


# --- structure the numbers above cannot see --------------------------------------------------

def test_trainer_lm_head_is_tied_to_the_decoder_embeddings_only():
    model = QaracTrainerModel(tiny_config())
    lm_output = model.decoder.decoder_head.head.decoder.weight
    assert lm_output is model.decoder.decoder.embeddings.word_embeddings.weight
    assert lm_output is not model.question_encoder.encoder.embeddings.word_embeddings.weight


def test_embeddings_match_numpy_with_roberta_positions():
    """word + position + token-type embedding, layer-normed; RoBERTa numbers real tokens from
    pad_token_id + 1 and gives padding the pad_token_id position (HF's convention)."""
    config = tiny_config()
    torch.manual_seed(2)
    model = QaracTrainerModel(config).eval()
    embeddings = model.question_encoder.encoder.embeddings
    inputs, _ = trainer_batch(3, 7, padded=True, seed=6)
    ids, mask = inputs["question"].input_ids, inputs["question"].attention_mask
    with torch.no_grad():
        got = embeddings(input_ids=ids).double().numpy()
    w = _w(embeddings)
    pad = config.pad_token_id
    positions = np.where(mask.numpy() == 1, np.cumsum(mask.numpy(), axis=1) + pad, pad)
    summed = w["word_embeddings.weight"][ids.numpy()] + w["position_embeddings.weight"][positions] \
        + w["token_type_embeddings.weight"][0]
    want = layer_norm(summed, w["LayerNorm.weight"], w["LayerNorm.bias"], config.base["layer_norm_eps"])
    assert np.abs(got - want).max() < 1e-5
