"""`qarac train`'s fast paths (multi-tensor NAdam, padded vocabulary product, --compile)
give the loss history of the plain paths, on the sample corpus."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from qarac.cli import build_parser
from qarac.optim import KerasNadam
from qarac.presets import build_base_checkpoint
from qarac.training.config import TrainConfig
from qarac.training.loop import train
from qarac.training.loss_step import compile_mode
from qarac.training.optimizer import make_optimizer, optimizer_implementation
from qarac.training.runtime import Runtime
from qarac.vocab_padding import PaddedVocabLinear
from training_helpers import saved_weights, small_corpus, tiny_train_config
from weights_helpers import moved_by_one_ulp

# An odd vocabulary (the embedded tokenizer has 512 ids) so that padding to 64 adds 61 rows.
ODD_VOCAB = 515


def odd_vocab_model(root, **overrides):
    return build_base_checkpoint(root / "odd-vocab", "tiny", 0, vocab_size=ODD_VOCAB, **overrides)


def totals(history):
    return np.array([[entry[name] for name in ("encode_decode", "question_answering", "reasoning",
                                               "consistency", "total")] for entry in history])


def relative_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    """The largest per-value relative difference of two (steps, 5) loss histories."""
    return float(np.max(np.abs(actual / expected - 1)))


# A rounding-level difference (another reduction order, another CPU's kernels) grows over 12
# steps of training as the same difference planted in the initial weights does. The bound is
# that growth measured in the same process, times this margin. Measured on the 2-core AMD EPYC
# (`python -m pytest -s tests/test_train_paths.py`): one-ulp spread 5.5e-6 (down) and 7.3e-6 (up);
# the fast paths 0 as is, 2.2e-6 with MKL_CBWR=COMPATIBLE, 5.8e-6 under the rounding-change pass,
# 9.7e-6 on an Intel Xeon (AVX-512); Keras' epsilon mistaken for torch's default: 1.1e-3, 15x the bound.
ROUNDING_MARGIN = 10.0


@dataclass(frozen=True)
class PlainRun:
    """The plain paths' 12-step history on the odd-vocabulary model, and how far one-ulp
    moves of its initial weights carry the same 12 steps: the rounding scale of this history."""

    model_dir: Path
    history: np.ndarray
    rounding_spread: float

    @property
    def bound(self) -> float:
        return ROUNDING_MARGIN * self.rounding_spread


def plain_history(root: Path, model_dir: Path) -> np.ndarray:
    config = tiny_train_config(root, model_dir=str(model_dir), max_steps=12, optimizer="single", pad_vocab=1)
    return totals(train(config).state.history)


def rounding_spread(root: Path, model_dir: Path, history: np.ndarray, run) -> float:
    """How far `run(output_dir, model_dir)`'s history moves from `history` when every initial weight
    of `model_dir` moves one ulp up, or down: the larger of the two relative differences."""
    spreads = [relative_difference(run(root / f"moved{direction}",
                                       moved_by_one_ulp(model_dir, root / f"model{direction}", direction)), history)
               for direction in (1, -1)]
    print(f"one-ulp spread of the history: {spreads}")
    assert max(spreads) > 0, "a one-ulp move of every weight left the training steps unchanged"
    return max(spreads)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> PlainRun:
    root = tmp_path_factory.mktemp("plain")
    model_dir = odd_vocab_model(root)
    history = plain_history(root / "plain", model_dir)
    return PlainRun(model_dir, history, rounding_spread(root, model_dir, history, plain_history))


def test_new_paths_keep_the_loss_history(plain_run, tmp_path):
    """Plain (per-parameter NAdam, no padding) against the new paths (multi-tensor NAdam, vocabulary
    product padded 515 -> 576), 12 steps of the sample corpus, dropout on.

    The multi-tensor step is bit-exact (tests/test_optim.py). The padded product reduces over 576
    instead of 515 columns (61 zeros), which MKL may block differently: identical on the AMD EPYC
    as is, not on an Intel Xeon. Bound: `ROUNDING_MARGIN` times the spread one-ulp weight moves make."""
    fast = train(tiny_train_config(tmp_path / "fast", model_dir=str(plain_run.model_dir), max_steps=12, pad_vocab=64))
    assert isinstance(fast.model.decoder.decoder_head.head.decoder, PaddedVocabLinear)
    assert fast.model.decoder.decoder_head.head.decoder.multiple == 64
    expected, actual = plain_run.history, totals(fast.state.history)
    difference = relative_difference(actual, expected)
    print(f"new vs plain paths: max relative difference {difference:.2e}, bound {plain_run.bound:.2e}")
    assert expected[-1, -1] < expected[0, -1]  # it trained
    assert difference <= plain_run.bound
    assert saved_weights(plain_run.model_dir.parent / "plain").keys() == saved_weights(tmp_path / "fast").keys()


def test_loss_history_check_catches_a_wrong_optimizer(plain_run, tmp_path):
    """The same comparison against Keras' epsilon mistaken for torch's default (1e-8)."""
    wrong = train(tiny_train_config(tmp_path / "wrong", model_dir=str(plain_run.model_dir), max_steps=12,
                                    optimizer="single", epsilon=1e-8))
    difference = relative_difference(totals(wrong.state.history), plain_run.history)
    print(f"wrong epsilon vs plain: max relative difference {difference:.2e}, bound {plain_run.bound:.2e}")
    assert difference > plain_run.bound


def test_optimizer_and_compile_settings():
    config = TrainConfig(output_dir="unused")
    assert config.optimizer == "foreach" and not config.compile
    optimizer = make_optimizer(torch.nn.Linear(2, 2), config)
    assert isinstance(optimizer, KerasNadam) and optimizer.implementation == "foreach"
    assert optimizer_implementation(TrainConfig(output_dir="unused", compile=True)) == "compiled"
    assert optimizer_implementation(TrainConfig(output_dir="unused", compile=True, optimizer="single")) == "single"
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(output_dir="unused", optimizer="fused")
    with pytest.raises(ValueError, match="pad_vocab"):
        TrainConfig(output_dir="unused", pad_vocab=0)


def test_cuda_graphs_only_for_fixed_shapes_on_one_cuda_device():
    fixed = TrainConfig(output_dir="unused", compile=True, device="cuda", data_options=("padding=corpus_fit",))
    cuda = Runtime(torch.device("cuda"))
    assert compile_mode(fixed, cuda) == "reduce-overhead"
    assert compile_mode(TrainConfig(output_dir="unused", compile=True, device="cuda"), cuda) is None  # batch padding
    assert compile_mode(fixed, Runtime(torch.device("cpu"))) is None
    assert compile_mode(fixed, Runtime(torch.device("cuda", 0), rank=0, world_size=2)) is None


def test_cli_flags_reach_the_config():
    args = build_parser().parse_args(["train", "--output", "o", "--compile", "--optimizer", "single",
                                      "--pad-vocab", "8"])
    assert (args.compile, args.optimizer, args.pad_vocab) == (True, "single", 8)
    defaults = build_parser().parse_args(["train", "--output", "o"])
    assert (defaults.compile, defaults.optimizer, defaults.pad_vocab) == (False, "foreach", None)


@pytest.mark.slow
def test_compiled_run_keeps_the_loss_history_and_resumes(tmp_path):
    """`--compile` (forward, loss and NAdam compiled) against eager, 6 steps then 2 more resumed.
    Dropout is off in this model: compiled code draws its dropout masks from another generator,
    which no tolerance could cover. Fixed-shape batches (padding=corpus_fit) compile once.
    Bound: `ROUNDING_MARGIN` times the spread one-ulp moves of the initial weights make in the
    eager history (the compiler's fused float32 arithmetic and the compiled optimizer's 4 ulps are
    rounding-level changes too); measured: see the print."""
    model_dir = odd_vocab_model(tmp_path, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    data = small_corpus(tmp_path / "data", rows=12)
    common = dict(data_dir=str(data), pad_vocab=64, data_options=("padding=corpus_fit",))

    def eager_history(output_dir: Path, weights: Path) -> np.ndarray:
        return totals(train(tiny_train_config(output_dir, model_dir=str(weights), max_steps=8, **common)).state.history)

    expected = eager_history(tmp_path / "eager", model_dir)
    bound = ROUNDING_MARGIN * rounding_spread(tmp_path, model_dir, expected, eager_history)
    train(tiny_train_config(tmp_path / "compiled", model_dir=str(model_dir), max_steps=6, compile=True, **common))
    compiled = train(tiny_train_config(tmp_path / "compiled", model_dir=str(model_dir), max_steps=8, compile=True,
                                       resume=True, **common)).state
    actual = totals(compiled.history)
    difference = relative_difference(actual, expected)
    print(f"compiled vs eager loss history: max relative difference {difference:.2e}, bound {bound:.2e}")
    assert len(compiled.history) == 8
    assert difference <= bound
