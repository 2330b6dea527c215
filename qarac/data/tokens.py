"""Tokenisation of the corpora's texts as the data options say, and the flat store of the tokens.

Encoder inputs are `<s> text </s>` (or the bare text, `encoder_special_tokens=False`); a decoder
input is `prefix text` and its target `text suffix`, with the prefix `<s>` and the suffix `</s>`
by default, so that `offset[1:] == target[:-1]`: teacher forcing shifted by one.
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import numpy as np
import torch

# Field -> corpus it is drawn from; the pipeline cycles each corpus separately.
FIELD_CORPUS: Mapping[str, str] = {
    "all_text": "all_text", "offset_text": "all_text", "encode_decode": "all_text",
    "question": "question_answering", "answer": "question_answering",
    "proposition0": "reasoning", "proposition1": "reasoning",
    "conclusion_offset": "reasoning", "reasoning": "reasoning",
    "statement0": "consistency", "statement1": "consistency", "consistency": "consistency",
}
# Decoder text column -> (decoder input field, target field).
DECODER_FIELDS = {"all_text": ("offset_text", "encode_decode"), "conclusion": ("conclusion_offset", "reasoning")}


def check_max_length(max_length: int) -> None:
    # <s>, one token and </s>: anything shorter cannot hold a text.
    if max_length < 3:
        raise ValueError(f"max_length must be at least 3 (<s> token </s>), got {max_length}")


def encode(tokenizer, texts: Sequence[str], max_length: int, special: bool, truncate: bool) -> list[list[int]]:
    """N texts as N lists of token ids: `<s> text </s>` with `special`, else the bare text;
    cut to `max_length` ids (the special tokens kept) with `truncate`, else whole."""
    return tokenizer(list(texts), add_special_tokens=special, truncation=truncate,
                     max_length=max_length if truncate else None)["input_ids"]


def decoder_affixes(tokenizer, kind: str) -> tuple[list[int], list[int]]:
    """(prefix, suffix) of decoder inputs and targets: `<s>` and `</s>` ("single"), or what the
    legacy's `encode('<s>')` and `encode('</s>')` gave ("post_processor")."""
    if kind == "single":
        return [tokenizer.bos_token_id], [tokenizer.eos_token_id]
    # The post-processor wraps the special token itself: <s> <s> </s> and <s> </s> </s>.
    return (tokenizer(tokenizer.bos_token, add_special_tokens=True)["input_ids"],
            tokenizer(tokenizer.eos_token, add_special_tokens=True)["input_ids"])


class TokenColumn:
    """Variable-length token sequences stored flat: one int32 array and offsets.

    Millions of small Python lists (SNLI has 550k pairs) would cost far more
    memory than the tokens themselves.
    """

    def __init__(self, seqs: Sequence[Sequence[int]]):
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        self.offsets = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(lengths)])
        self.values = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int32,
                                  count=int(self.offsets[-1]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> torch.Tensor:
        """Sequence `index` as a (L,) int64 tensor."""
        start, end = self.offsets[index], self.offsets[index + 1]
        return torch.from_numpy(self.values[start:end].astype(np.int64))

    def lengths(self) -> np.ndarray:
        """(N,) int64: each sequence's length."""
        return np.diff(self.offsets)
