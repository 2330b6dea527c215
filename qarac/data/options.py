"""The data options: how the corpora become batches (`DataConfig`), the default pipeline's
values and the legacy's (docs/legacy.md §1.5), and the command line's `--data-option` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Sequence

# Option name -> the value that reproduces the legacy's input pipeline
# (`legacy_keras.pipeline`, the original's CorpusLoader / CombinedCorpus).
LEGACY_DATA_VALUES: Mapping[str, Any] = MappingProxyType({
    "encoder_special_tokens": False,
    "decoder_affixes": "post_processor",
    "padding": "corpus",
    "truncate": False,
    "batching": "all_text_epoch",
    "batch_size": 32,
    "all_text": "composed",
})
_CHOICES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "decoder_affixes": ("single", "post_processor"),
    "padding": ("batch", "corpus", "corpus_fit"),
    "batching": ("cycled", "all_text_epoch"),
    "all_text": ("file", "composed"),
})


@dataclass(frozen=True)
class DataConfig:
    """How corpora become batches. The default is the corrected pipeline;
    `DataConfig().legacy()` reproduces the legacy's batches exactly.

    Attributes:
        encoder_special_tokens: encoder inputs are `<s> text </s>`. Legacy
            (False): every text was encoded with `add_special_tokens=False`, so
            encoder inputs carried no `<s>`/`</s>`.
        decoder_affixes: "single": decoder input `<s> text`, target
            `text </s>`, a one-token shift. Legacy ("post_processor"): prefix and
            suffix were `encode('<s>')` and `encode('</s>')` with the RoBERTa
            post-processor on, `<s> <s> </s>` and `<s> </s> </s>`, so position i
            was trained to predict the token three places ahead.
        padding: "batch": each field padded to its longest row in the batch.
            Legacy ("corpus"): one length per field for the whole corpus, the
            longest text (+ 1 for decoder inputs and targets, not + the affix),
            never truncating, mask `ids != pad`: a batch holding a decoder text
            within two tokens of the longest is ragged and raises
            `RaggedBatchError`, where the original's batch could not become a
            tensor. "corpus_fit": one length per field for the whole corpus,
            the longest sequence, so nothing is ragged (the legacy's fixed
            shapes, trainable).
        truncate: cut every sequence to `max_length`. Legacy (False): never
            truncated; a sequence longer than `max_length` is an error up front.
        batching: "cycled": an epoch is the largest corpus, example i takes
            row i % size of each corpus, examples shuffled and split among the
            processes as torch's `DistributedSampler` does (its seed is the
            run's), last partial batch kept. Legacy ("all_text_epoch"): the epoch is
            set by all_text (len // batch_size batches, last partial batch
            dropped); each corpus is shuffled in place by its own
            `numpy.random.default_rng([seed, k])` at every pass, the others
            repeated pass after pass to all_text's length; one process only.
        batch_size: examples per batch; None: the trainer's `--batch-size`.
            Legacy: 32, a constant of the original.
        all_text: "file": all_text.csv as it is. Legacy ("composed"): composed
            as the original's data preparation did, the answers, `proposition0`
            twice (Premise 1; Premise 2 never), the conclusions, `statement0`
            and `statement1`, in that order.
    """

    encoder_special_tokens: bool = True
    decoder_affixes: str = "single"
    padding: str = "batch"
    truncate: bool = True
    batching: str = "cycled"
    batch_size: int | None = None
    all_text: str = "file"

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"data option {name} must be one of {list(choices)}, got {getattr(self, name)!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"data option batch_size must be at least 1 or None, got {self.batch_size}")

    def legacy(self) -> DataConfig:
        """This config with every data option as the legacy pipeline had it."""
        return dataclasses.replace(self, **LEGACY_DATA_VALUES)

    @property
    def is_default(self) -> bool:
        return self == DataConfig()

    def with_assignments(self, assignments: Sequence[str]) -> DataConfig:
        """This config with `NAME=VALUE` overrides (the command line's `--data-option`).

        Raises:
            ValueError: an unknown option or a value of the wrong kind.
        """
        changes: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(self)}
        for assignment in assignments:
            name, sep, value = assignment.partition("=")
            if not sep or name not in fields:
                raise ValueError(f"--data-option expects NAME=VALUE with NAME one of {sorted(fields)}, "
                                 f"got {assignment!r}")
            if name in ("encoder_special_tokens", "truncate"):
                if value.lower() not in ("true", "false"):
                    raise ValueError(f"data option {name} is true or false, got {value!r}")
                changes[name] = value.lower() == "true"
            elif name == "batch_size":
                changes[name] = None if value.lower() == "none" else int(value)
            else:
                changes[name] = value
        return dataclasses.replace(self, **changes)


def data_config_for(preset: str, assignments: Sequence[str] = ()) -> DataConfig:
    """`DataConfig()` ("default") or `DataConfig().legacy()` ("legacy"), then the overrides."""
    if preset not in ("default", "legacy"):
        raise ValueError(f"data preset must be 'default' or 'legacy', got {preset!r}")
    base = DataConfig() if preset == "default" else DataConfig().legacy()
    return base.with_assignments(assignments)
