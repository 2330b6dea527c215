"""The RoBERTa-style byte-level BPE tokenizer of QARAC.

The embedded default (`qarac/assets/tokenizer/`) is trained on the sample corpus
by `scripts/make_tokenizer.py` with a vocabulary of exactly 512, the vocabulary
of the embedded tiny RoBERTa. Any local HF RoBERTa tokenizer directory (for
instance `roberta-base`'s, downloaded beforehand) can stand in for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from qarac import _hf  # noqa: F401  (keeps TensorFlow out of the port)
from tokenizers import AddedToken, ByteLevelBPETokenizer
from tokenizers.processors import RobertaProcessing
from transformers import RobertaTokenizerFast

# RoBERTa's special tokens, in id order: <s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4.
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
DEFAULT_VOCAB_SIZE = 512
# The tiny preset has 128 usable positions (max_position_embeddings 130).
DEFAULT_MODEL_MAX_LENGTH = 128
DEFAULT_TOKENIZER_DIR = Path(__file__).resolve().parent / "assets" / "tokenizer"
# Either file set is enough for RobertaTokenizerFast.from_pretrained.
_TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE,
                    min_frequency: int = 2,
                    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH) -> RobertaTokenizerFast:
    """Train a byte-level BPE tokenizer laid out like RoBERTa's.

    Training is deterministic: the same texts in the same order give the same
    merges and ids.

    Args:
        texts: training sentences.
        vocab_size: size of the vocabulary, special tokens and the 256 byte
            symbols included.
        min_frequency: a pair must occur this often to be merged.
        model_max_length: the longest sequence the model it serves accepts.

    Returns:
        The tokenizer, with `<s> text </s>` as its full encoding.
    """
    bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
    bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=min_frequency,
                            special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    backend = bpe._tokenizer  # the underlying `tokenizers.Tokenizer`
    backend.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0),
                                               trim_offsets=True, add_prefix_space=False)
    return RobertaTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        sep_token="</s>", cls_token="<s>",
        # As in roberta-base: the mask absorbs the space before it.
        mask_token=AddedToken("<mask>", lstrip=True, rstrip=False),
        add_prefix_space=False, trim_offsets=True,
        model_max_length=model_max_length,
        # Decoding must give back the text exactly, so no space clean-up.
        clean_up_tokenization_spaces=False,
    )


def _holds_tokenizer(directory: Path) -> bool:
    return any(all((directory / name).is_file() for name in names)
               for names in _TOKENIZER_FILES)


def load_tokenizer(directory: str | os.PathLike) -> RobertaTokenizerFast:
    """Load a RoBERTa tokenizer from a local HF tokenizer directory.

    Args:
        directory: a folder holding `tokenizer.json`, or `vocab.json` and
            `merges.txt` (plus, optionally, `tokenizer_config.json` and
            `special_tokens_map.json`). Nothing is ever downloaded.

    Returns:
        The tokenizer.

    Raises:
        FileNotFoundError: the directory does not exist or holds no tokenizer.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"tokenizer directory {str(directory)!r} does not exist; "
                                "pass a local HF RoBERTa tokenizer directory")
    if not _holds_tokenizer(directory):
        raise FileNotFoundError(
            f"{str(directory)!r} holds no tokenizer: expected tokenizer.json, or vocab.json "
            "and merges.txt (save one with tokenizer.save_pretrained(DIR))")
    return RobertaTokenizerFast.from_pretrained(str(directory), local_files_only=True)


def tokenizer_sha256(tokenizer: RobertaTokenizerFast) -> str:
    """A digest of what the tokenizer does, not of how its files are laid out: its vocabulary
    (added tokens included) and its BPE merges, so the same tokenizer saved as tokenizer.json or as
    vocab.json + merges.txt, by transformers 4 or 5, has one digest."""
    import hashlib
    import json

    model = json.loads(tokenizer.backend_tokenizer.to_str()).get("model", {})
    # tokenizers writes a merge as "a b" (older) or ["a", "b"] (newer).
    merges = [merge.split(" ", 1) if isinstance(merge, str) else list(merge) for merge in model.get("merges", [])]
    content = {"vocabulary": sorted(tokenizer.get_vocab().items()), "merges": merges}
    return hashlib.sha256(json.dumps(content, ensure_ascii=False).encode("utf-8")).hexdigest()


def load_default_tokenizer() -> RobertaTokenizerFast:
    """The embedded tokenizer (vocabulary 512) shipped in `qarac/assets/tokenizer/`."""
    return load_tokenizer(DEFAULT_TOKENIZER_DIR)


def check_tokenizer_fits(tokenizer: RobertaTokenizerFast, vocab_size: int) -> None:
    """Check that every id the tokenizer can emit has a row in the embeddings.

    Args:
        tokenizer: the tokenizer.
        vocab_size: the model's vocabulary size (rows of its word embeddings).

    Raises:
        ValueError: the tokenizer has more tokens than the model's vocabulary.
    """
    size = len(tokenizer)  # added tokens included
    if size > vocab_size:
        raise ValueError(f"the tokenizer has {size} tokens but the model's vocabulary has "
                         f"only {vocab_size}; use a tokenizer built for this model or a "
                         f"model with vocab_size >= {size}")
