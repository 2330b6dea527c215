"""Build the embedded tokenizer, `qarac/assets/tokenizer/`, from the sample corpus.

Deterministic: rebuilding from the same `all_text.csv` writes an identical
`tokenizer.json`.

Usage:
    python scripts/make_tokenizer.py [--corpus ALL_TEXT_CSV] [--output DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from qarac.data.corpora import DEFAULT_DATA_DIR, load_all_text
from qarac.tokenizer import DEFAULT_TOKENIZER_DIR, DEFAULT_VOCAB_SIZE, train_tokenizer


def build(corpus: Path, output: Path, vocab_size: int = DEFAULT_VOCAB_SIZE) -> Path:
    """Train on `corpus` (an `all_text` CSV) and save the tokenizer to `output`."""
    tokenizer = train_tokenizer(load_all_text(corpus), vocab_size=vocab_size)
    if len(tokenizer) != vocab_size:
        raise RuntimeError(f"the corpus gave {len(tokenizer)} tokens, not {vocab_size}: "
                           "it has too few distinct pairs to merge")
    output.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(output))
    return output


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_DATA_DIR / "all_text.csv")
    parser.add_argument("--output", type=Path, default=DEFAULT_TOKENIZER_DIR)
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    args = parser.parse_args(argv)
    print(f"tokenizer written to {build(args.corpus, args.output, args.vocab_size)}")


if __name__ == "__main__":
    main()
