"""Pooling head against a numpy computation of docs/legacy.md §1.1; decoder head structure."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model_helpers import tiny_config
from qarac.heads import GlobalAttentionPoolingHead, QaracDecoderHead, additive_attention_mask, l2_normalize


def numpy_pooling(x, global_w, local_w, mask, masks_padding):
    """docs/legacy.md §1.1 written out in float64 numpy, independent of the module."""
    m = np.ones(x.shape[:2]) if mask is None else mask.astype(np.float64)
    summed = (x * m[..., None]).sum(1) if masks_padding else x.sum(1)
    g = summed @ global_w
    local = x @ local_w
    local_unit = local / np.sqrt(np.maximum((local ** 2).sum(-1, keepdims=True), 1e-12))
    g_unit = g / np.sqrt(np.maximum((g ** 2).sum(-1, keepdims=True), 1e-12))
    attention = (local_unit * g_unit[:, None, :]).sum(-1)
    return ((attention * m)[..., None] * x).sum(1)


def run_head(masks_padding, x, mask):
    torch.manual_seed(0)  # the same weights for both semantics
    head = GlobalAttentionPoolingHead(tiny_config(pooling_masks_padding=masks_padding))
    got = head(torch.from_numpy(x).float(), None if mask is None else torch.from_numpy(mask))
    want = numpy_pooling(x, head.global_projection.detach().double().numpy(),
                         head.local_projection.detach().double().numpy(), mask, masks_padding)
    return got.detach().numpy(), want


@pytest.mark.parametrize("masks_padding", [True, False], ids=["fixed", "legacy"])
@pytest.mark.parametrize("with_mask", [True, False])
def test_pooling_head_matches_numpy_formula(masks_padding, with_mask):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(13, 7, 32)).astype(np.float32).astype(np.float64)
    mask = (np.arange(7)[None, :] < rng.integers(1, 8, size=(13, 1))).astype(np.int64) if with_mask else None
    got, want = run_head(masks_padding, x, mask)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_legacy_and_fixed_pooling_differ_only_with_padding():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 5, 32))
    full = np.ones((2, 5), dtype=np.int64)
    padded = full.copy()
    padded[0, 3:] = 0
    np.testing.assert_allclose(run_head(True, x, full)[0], run_head(False, x, full)[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(run_head(True, x, padded)[0][0], run_head(False, x, padded)[0][0], atol=1e-4)


def test_projection_layout_is_x_times_g():
    """The (H_in, H_out) layout: a non-symmetric G must be applied as X @ G, not X @ G.T."""
    head = GlobalAttentionPoolingHead(tiny_config())
    x = torch.randn(1, 1, 32)
    with torch.no_grad():
        head.global_projection.copy_(torch.triu(torch.ones(32, 32)))
        head.local_projection.copy_(torch.triu(torch.ones(32, 32)))
    # One token: attention is cos(x L, x G) = 1 since L == G, so E == x; now break the symmetry.
    assert torch.allclose(head(x), x[:, 0], atol=1e-6)
    with torch.no_grad():
        head.local_projection.copy_(torch.triu(torch.ones(32, 32)).T)
    expected = torch.nn.functional.cosine_similarity(x[0] @ head.local_projection, x[0] @ head.global_projection)
    assert torch.allclose(head(x)[0], expected * x[0, 0], atol=1e-5)


def test_l2_normalize_matches_tensorflow_definition():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-8, 0.0]])
    want = x / torch.sqrt(torch.clamp((x ** 2).sum(-1, keepdim=True), min=1e-12))
    assert torch.equal(l2_normalize(x), want)
    assert torch.allclose(l2_normalize(x)[0], torch.tensor([0.6, 0.8]))


@st.composite
def padded_batches(draw):
    batch = draw(st.integers(1, 5))
    length = draw(st.integers(1, 9))
    lengths = draw(st.lists(st.integers(1, length), min_size=batch, max_size=batch))  # >= 1 real token per row
    seed = draw(st.integers(0, 2 ** 16))
    return batch, length, lengths, seed


@settings(max_examples=40, deadline=None)
@given(padded_batches(), st.booleans())
def test_pooling_head_property_matches_numpy(case, masks_padding):
    batch, length, lengths, seed = case
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, length, 32)).astype(np.float32).astype(np.float64)
    mask = (np.arange(length)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    got, want = run_head(masks_padding, x, mask)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(padded_batches())
def test_fixed_pooling_ignores_whatever_sits_in_padding(case):
    batch, length, lengths, seed = case
    head = GlobalAttentionPoolingHead(tiny_config())
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, 32, generator=generator)
    mask = (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()
    garbage = torch.where(mask[..., None].bool(), x, 100 * torch.randn(x.shape, generator=generator))
    torch.testing.assert_close(head(x, mask), head(garbage, mask), rtol=1e-5, atol=1e-5)


def test_additive_mask_is_causal_and_hides_padding():
    mask = torch.tensor([[1, 1, 0]])
    additive = additive_attention_mask(mask, causal=True, batch=1, length=3, dtype=torch.float32, device="cpu")
    allowed = additive[0, 0] == 0
    assert allowed.tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    # row 2 is padding: it may see itself only so that its softmax stays finite
    assert additive_attention_mask(None, causal=False, batch=1, length=3, dtype=torch.float32, device="cpu") is None


def test_decoder_head_ties_lm_output_to_embeddings_and_shapes():
    config = tiny_config()
    embeddings = torch.nn.Embedding(config.vocab_size, 32)
    head = QaracDecoderHead(config, embeddings)
    assert head.head.decoder.weight is embeddings.weight
    logits = head.eval()(torch.randn(13, 32), torch.randn(13, 7, 32), torch.ones(13, 7, dtype=torch.long))
    assert logits.shape == (13, 7, config.vocab_size)
