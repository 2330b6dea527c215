"""`qarac.inference`: what a caller of `encode`/`generate` gets (issue 13 item 9 and the
tracebacks list)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qarac.inference import encode, generate
from qarac.presets import tiny_model_dir
from qarac.tokenizer import load_default_tokenizer
from qarac.trainer import QaracTrainerModel


@pytest.fixture(scope="module")
def model_and_tokenizer():
    torch.manual_seed(0)
    return QaracTrainerModel.from_base_model(tiny_model_dir()).eval(), load_default_tokenizer()


def test_a_bare_string_is_one_text(model_and_tokenizer):
    """It was iterated character by character: one vector per character."""
    model, tokenizer = model_and_tokenizer
    one = encode(model, tokenizer, "All men are mortal.")
    assert one.shape == (1, 32)
    np.testing.assert_array_equal(one, encode(model, tokenizer, ["All men are mortal."]))


@pytest.mark.parametrize("max_length", [-5, 0, 2, 129])
def test_bad_max_length_is_refused(model_and_tokenizer, max_length):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ValueError, match=f"max_length {max_length}"):
        encode(model, tokenizer, ["a text"], max_length=max_length)


def test_non_text_items_are_refused(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(TypeError, match="text 1 is a int"):
        encode(model, tokenizer, ["a text", 3])


def test_generate_takes_float64_vectors(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    vectors = encode(model, tokenizer, ["All men are mortal.", "Socrates is a man."])
    assert generate(model, tokenizer, vectors.astype(np.float64), 6) == generate(model, tokenizer, vectors, 6)
    assert generate(model, tokenizer, torch.from_numpy(vectors).double(), 6) == generate(model, tokenizer, vectors, 6)


def test_generate_refuses_non_finite_vectors_in_one_line(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    vectors = np.zeros((2, 32))
    vectors[1, 4] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        generate(model, tokenizer, vectors, 6)


def test_decoder_generate_casts_a_float64_vector(model_and_tokenizer):
    """It failed inside the head: "mat1 and mat2 must have the same dtype, but got Double and Float"."""
    model, tokenizer = model_and_tokenizer
    vectors = torch.from_numpy(encode(model, tokenizer, ["All men are mortal."]))
    torch.testing.assert_close(model.decoder.generate(vectors.double(), 6), model.decoder.generate(vectors, 6))
