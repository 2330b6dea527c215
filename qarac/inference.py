"""Using a trained checkpoint: texts to vectors (`encode`) and vectors to texts (`generate`)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from qarac import _hf  # noqa: F401
from qarac.trainer import QaracTrainerModel


def load_for_inference(checkpoint: str | os.PathLike, device: str = "cpu"):
    """(model in eval mode, tokenizer) of a checkpoint directory or a training output directory.

    The tokenizer saved with the checkpoint is used, and must be the one its digest names; a
    checkpoint saved without one gets a tokenizer saved beside it, else the embedded one.

    Raises:
        qarac.checkpoint.CheckpointError: not a QaracTrainerModel checkpoint, a file changed
            after saving, or a tokenizer other than the one it was saved with.
    """
    from qarac.checkpoint import CheckpointError, read_checkpoint_record
    from qarac.tokenizer import check_tokenizer_fits, load_default_tokenizer, load_tokenizer, tokenizer_sha256
    from qarac.training.checkpoints import resolve_checkpoint

    directory = resolve_checkpoint(checkpoint)
    model = QaracTrainerModel.from_pretrained(directory, map_location=device).eval()  # files verified
    recorded = read_checkpoint_record(directory).get("tokenizer_sha256")
    if recorded is not None:  # saved with its tokenizer: that one, or none
        tokenizer = load_tokenizer(directory)
        if tokenizer_sha256(tokenizer) != recorded:
            raise CheckpointError(f"the tokenizer in {directory} is not the one the checkpoint was saved with "
                                  "(tokenizer_sha256 differs); put its own tokenizer files back")
    else:  # a bare save_pretrained: a tokenizer saved beside it, else the embedded one
        has_tokenizer = (Path(directory) / "tokenizer.json").is_file()
        tokenizer = load_tokenizer(directory) if has_tokenizer else load_default_tokenizer()
    check_tokenizer_fits(tokenizer, model.config.vocab_size)
    return model, tokenizer


# <s>, one token and </s>: a shorter limit cannot hold a text.
MIN_MAX_LENGTH = 3


def check_max_length(max_length: int, model: QaracTrainerModel) -> None:
    """Raises ValueError unless 3 <= max_length <= the model's positions."""
    if not MIN_MAX_LENGTH <= max_length <= model.config.max_tokens:
        raise ValueError(f"max_length {max_length} is outside [{MIN_MAX_LENGTH}, {model.config.max_tokens}]: "
                         f"at least <s> token </s>, at most the model's {model.config.max_tokens} positions")


@torch.no_grad()
def encode(model: QaracTrainerModel, tokenizer, texts: str | Iterable[str], question: bool = False,
           max_length: int = 128, batch_size: int = 64) -> np.ndarray:
    """Texts -> (N, H) float32 vectors, by the answer encoder or, with `question`, the question encoder.

    Args:
        texts: one text (a str) or N texts.
        max_length: most tokens per text, <s> and </s> included (longer texts are truncated).
        batch_size: texts per forward pass.

    Raises:
        ValueError: no texts, a max_length outside [3, positions], or batch_size < 1.
        TypeError: an item that is not a str.
    """
    batches = list(encode_batches(model, tokenizer, texts, question, max_length, batch_size))
    if not batches:
        raise ValueError("no texts to encode; give texts as arguments or --file")
    return np.concatenate(batches)


def encode_batches(model: QaracTrainerModel, tokenizer, texts: str | Iterable[str], question: bool = False,
                   max_length: int = 128, batch_size: int = 64) -> Iterator[np.ndarray]:
    """`encode` one batch at a time, reading `texts` lazily: (B, H) float32 arrays,
    B <= batch_size, in order. Memory grows with the batch, not with the number of texts.

    Raises:
        ValueError: (at once) a max_length outside [3, positions], or batch_size < 1.
        TypeError: (when its batch is reached) an item that is not a str.
    """
    check_max_length(max_length, model)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    # A bare string is one text (iterating it would give one text per character).
    return _encode_chunks(model, tokenizer, iter([texts] if isinstance(texts, str) else texts), question,
                          max_length, batch_size)


@torch.no_grad()
def _encode_chunks(model, tokenizer, texts: Iterator[str], question: bool, max_length: int,
                   batch_size: int) -> Iterator[np.ndarray]:
    device = next(model.parameters()).device
    encoder = model.question_encoder if question else model.answer_encoder
    done = 0
    while chunk := list(itertools.islice(texts, batch_size)):
        for index, text in enumerate(chunk, start=done):
            if not isinstance(text, str):
                raise TypeError(f"text {index} is a {type(text).__name__}, not a str")
        tokens = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        vectors = encoder(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))  # (B, H)
        done += len(chunk)
        yield vectors.float().cpu().numpy()


@torch.no_grad()
def generate(model: QaracTrainerModel, tokenizer, vectors: np.ndarray, max_length: int = 32) -> list[str]:
    """(N, H) or (H,) vectors -> N decoded texts (greedy, special tokens dropped).

    Raises:
        ValueError: vectors of the wrong shape or dtype.
    """
    array = np.asarray(vectors)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != model.config.hidden_size or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"expected float vectors of shape (N, {model.config.hidden_size}), "
                         f"got {array.dtype} {array.shape}")
    device = next(model.parameters()).device
    tokens = model.decoder.generate(torch.from_numpy(array.astype(np.float32)).to(device), max_length)
    return tokenizer.batch_decode(tokens.cpu().tolist(), skip_special_tokens=True)
