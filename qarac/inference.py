"""Using a trained checkpoint: texts to vectors (`encode`) and vectors to texts (`generate`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from qarac import _hf  # noqa: F401
from qarac.trainer import QaracTrainerModel


def load_for_inference(checkpoint: str | os.PathLike, device: str = "cpu"):
    """(model in eval mode, tokenizer) of a checkpoint directory or a training output directory.

    The tokenizer saved in the checkpoint is used; the embedded one if there is none.

    Raises:
        qarac.checkpoint.CheckpointError: not a QaracTrainerModel checkpoint.
    """
    from qarac.tokenizer import check_tokenizer_fits, load_default_tokenizer, load_tokenizer
    from qarac.train import resolve_checkpoint

    directory = resolve_checkpoint(checkpoint)
    model = QaracTrainerModel.from_pretrained(directory, map_location=device).eval()
    has_tokenizer = (Path(directory) / "tokenizer.json").is_file()
    tokenizer = load_tokenizer(directory) if has_tokenizer else load_default_tokenizer()
    check_tokenizer_fits(tokenizer, model.config.vocab_size)
    return model, tokenizer


@torch.no_grad()
def encode(model: QaracTrainerModel, tokenizer, texts: Sequence[str], question: bool = False,
           max_length: int = 128) -> np.ndarray:
    """Texts -> (N, H) float32 vectors, by the answer encoder or, with `question`, the question encoder.

    Raises:
        ValueError: no texts.
    """
    if not texts:
        raise ValueError("no texts to encode; give texts as arguments or --file")
    max_length = min(max_length, model.config.max_tokens)
    tokens = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    device = next(model.parameters()).device
    encoder = model.question_encoder if question else model.answer_encoder
    vectors = encoder(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))  # (N, H)
    return vectors.float().cpu().numpy()


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
