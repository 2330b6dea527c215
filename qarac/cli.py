"""The `qarac` command: `train`, `encode` and `generate`.

Parsing and printing only; the work is in `qarac.training` and `qarac.inference`.
Bad input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

EXIT_USAGE = 2
# The shell's status for a command ended by SIGINT (128 + 2), also used after SIGTERM.
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad input, reported as one line and exit status 2."""


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to each option's help, where X is a value (not None or False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        no_value = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if no_value or "%(default)" in help_text:
            return help_text
        return f"{help_text} (default: %(default)s)"


# torch and numpy take seeds as unsigned 64-bit; torch's own check fails past 2**63 ("Overflow when
# unpacking long long"), numpy's below 0.
MAX_SEED = 2**63 - 1


def check_seed(seed: int) -> None:
    """`--seed` must be in [0, 2**63 - 1]; checked before any work."""
    if not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed must be between 0 and 2**63 - 1, got {seed}")


def _add_train(subparsers) -> argparse.ArgumentParser:
    from qarac.data.corpora import CORPUS_COLUMNS
    from qarac.training.config import TrainConfig

    defaults = TrainConfig(output_dir="")
    csv_files = ", ".join(f"{name}.csv" for name in CORPUS_COLUMNS)
    parser = subparsers.add_parser("train", help="train QaracTrainerModel on the four corpora",
                                   formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--output", required=True, help="directory for checkpoints, loss history and plot")
    parser.add_argument("--model", help="local HF RoBERTa directory (default: the embedded tiny model)")
    parser.add_argument("--tokenizer", help="local HF RoBERTa tokenizer directory (default: the model's, "
                                            "else the embedded one)")
    parser.add_argument("--data", default=defaults.data_dir, help=f"directory holding {csv_files}")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the data")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps in all (overrides --epochs)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="examples per process")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="heads, data order and dropout")
    parser.add_argument("--lr", type=float, default=defaults.learning_rate, help="initial learning rate")
    parser.add_argument("--decay-steps", type=int, default=defaults.decay_steps,
                        help="ExponentialDecay steps: the rate is lr * decay_rate ** (step / decay_steps)")
    parser.add_argument("--decay-rate", type=float, default=defaults.decay_rate, help="ExponentialDecay rate")
    parser.add_argument("--staircase", action="store_true", help="floor the decay exponent")
    parser.add_argument("--beta1", type=float, default=defaults.beta1, help="Nadam beta_1")
    parser.add_argument("--beta2", type=float, default=defaults.beta2, help="Nadam beta_2")
    parser.add_argument("--epsilon", type=float, default=defaults.epsilon, help="Nadam epsilon (Keras' default)")
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every,
                        help="steps between checkpoints (0: only at the end)")
    parser.add_argument("--keep-checkpoints", type=int, default=defaults.keep_checkpoints,
                        help="newest checkpoints kept (older ones are the fallback for a corrupt newest)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=defaults.device, help="where to train")
    parser.add_argument("--no-bf16", action="store_true", help="no bf16 autocast on CUDA")
    parser.add_argument("--legacy", action="store_true", help="every compatibility option as the legacy had it")
    parser.add_argument("--max-length", type=int, default=defaults.max_length,
                        help="longest token sequence of any field")
    parser.add_argument("--data-preset", choices=("default", "legacy"), default=defaults.data_preset,
                        help="the data options (qarac.data.options.DataConfig): the corrected pipeline, or the "
                             "legacy's batches exactly")
    parser.add_argument("--data-option", action="append", default=[], metavar="NAME=VALUE",
                        help="override one data option of the preset, e.g. padding=corpus_fit (repeatable)")
    parser.add_argument("--num-workers", type=int, default=defaults.num_workers, help="DataLoader workers")
    run = parser.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true",
                     help="continue the run in OUTPUT from OUTPUT/latest, with the run's recorded settings; "
                          "a flag given here overrides its setting where a run may change it")
    run.add_argument("--overwrite", action="store_true", help="replace a run already in OUTPUT")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the forward, loss and optimizer step (CUDA graphs on CUDA when "
                             "--data-option padding=corpus_fit makes every batch one shape)")
    parser.add_argument("--optimizer", choices=("single", "foreach", "compiled"), default=defaults.optimizer,
                        help="Keras' Nadam step: torch's per-parameter loop, one multi-tensor step, or that "
                             "step compiled (the default becomes compiled under --compile)")
    parser.add_argument("--pad-vocab", type=int, metavar="N",
                        help="compute the LM head's vocabulary product padded to a multiple of N (default: 64 "
                             "on CUDA, none on CPU; weights and logits unchanged)")
    return parser


def _add_encode(subparsers) -> None:
    parser = subparsers.add_parser("encode", help="texts -> vectors (.npy)", formatter_class=DefaultsHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint directory or a training output directory")
    parser.add_argument("texts", nargs="*", help="texts to encode")
    parser.add_argument("--file", help="a text file, one text per line")
    parser.add_argument("--output", required=True,
                        help="where to write the (N, H) float32 array (.npy is appended if missing)")
    parser.add_argument("--question", action="store_true", help="use the question encoder")
    parser.add_argument("--max-length", type=int, default=128, help="most tokens per text, <s> and </s> included")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="texts per forward pass; memory grows with it, not with the number of texts")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")


def _add_generate(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="a vector (.npy) or a text -> decoded text",
                                   formatter_class=DefaultsHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint directory or a training output directory")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--vector", help="a .npy of shape (H,) or (N, H)")
    source.add_argument("--text", nargs="+", help="texts, encoded by the answer encoder, then decoded")
    parser.add_argument("--max-length", type=int, default=32, help="most tokens per text, <s> and </s> included")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qarac-port")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser(suppressed: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The `qarac` parser; `suppressed`: `train` flags whose defaults are left out of the
    namespace (so that what remains is what the command line gave)."""
    parser = argparse.ArgumentParser(prog="qarac", description="Train and use QARAC (PyTorch).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    train_parser = _add_train(subparsers)
    # On the actions, not through set_defaults: a parser default of SUPPRESS is put into the
    # namespace as the string "==SUPPRESS==" (and run through `type`).
    for action in train_parser._actions:
        if action.dest in suppressed:
            action.default = argparse.SUPPRESS
    _add_encode(subparsers)
    _add_generate(subparsers)
    return parser


# `train` flag -> the TrainConfig field it sets, where the names differ.
TRAIN_FIELDS = {"output": "output_dir", "model": "model_dir", "tokenizer": "tokenizer_dir", "data": "data_dir",
                "lr": "learning_rate", "no_bf16": "bf16", "data_option": "data_options", "no_progress": "progress"}


def train_settings(args: argparse.Namespace) -> dict[str, object]:
    """TrainConfig's fields from the `train` flags."""
    settings = {TRAIN_FIELDS.get(name, name): value for name, value in vars(args).items()
                if name not in ("command", "explicit")}
    settings["bf16"], settings["progress"] = not args.no_bf16, not args.no_progress
    settings["data_options"] = tuple(args.data_option)
    return settings


def resumed_settings(settings: dict[str, object], explicit: set[str]) -> dict[str, object]:
    """`--resume` continues with the run's recorded settings; a flag given on the command line
    overrides its setting (and is refused by `train` if the run cannot change it)."""
    from qarac.training.checkpoints import saved_train_config

    saved = saved_train_config(settings["output_dir"])
    given = {TRAIN_FIELDS.get(name, name) for name in explicit}
    taken = {name: saved[name] for name in settings
             if name in saved and name not in given and name not in ("output_dir", "resume", "overwrite")}
    if "data_options" in taken:
        taken["data_options"] = tuple(taken["data_options"])  # JSON gave a list back
    return {**settings, **taken}


def run_train(args: argparse.Namespace) -> None:
    from qarac.training.config import TrainConfig
    from qarac.training.loop import train

    check_seed(args.seed)
    settings = train_settings(args)
    if args.resume:
        settings = resumed_settings(settings, args.explicit)
    config = TrainConfig(**settings)
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the pooler dropped by the fixed config is expected, not news
    logging.basicConfig(format="qarac train: %(message)s")  # "resuming from ..." on stderr
    logging.getLogger("qarac.training").setLevel(logging.INFO)
    state = train(config).state
    if state.history:
        last = state.history[-1]
        print(f"step {state.step}: total loss {last['total']:.4f}; checkpoint in {args.output}")


def _file_lines(path: Path) -> Iterator[str]:
    """Every line of a UTF-8 text file, read lazily; a blank line is the empty text, so that
    row i of the output is line i of the file."""
    try:
        with path.open(encoding="utf-8-sig") as handle:  # a byte order mark is not part of line 1
            for line in handle:
                yield line.rstrip("\r\n")
    except UnicodeDecodeError as error:
        raise UsageError(f"{path} is not UTF-8 text: {error}") from None


def _text_source(args: argparse.Namespace) -> tuple[int, Callable[[], Iterator[str]]]:
    """(number of texts, a function giving them afresh): the arguments, then the file's lines.

    The file is read twice (counting, then encoding) so that it is never held in memory.
    """
    path = Path(args.file) if args.file else None
    if path is not None and path.is_dir():
        raise UsageError(f"--file {path} is a directory; name a text file")
    if path is not None and path.exists() and not path.is_file():
        raise UsageError(f"--file {path} is not a regular file (a pipe or device: it is read twice, to count "
                         "and to encode); save the texts to a file first")
    if path is not None and not path.is_file():
        raise UsageError(f"--file {path} does not exist")
    count = len(args.texts) + (sum(1 for _ in _file_lines(path)) if path is not None else 0)

    def texts() -> Iterator[str]:
        yield from args.texts
        if path is not None:
            yield from _file_lines(path)

    return count, texts


def npy_path(output: str) -> Path:
    """`np.save`'s naming: `.npy` is appended unless the name has it."""
    return Path(output if output.endswith(".npy") else f"{output}.npy")


def run_encode(args: argparse.Namespace) -> None:
    import numpy as np

    from qarac.checkpoint import atomic_write, file_write_problem
    from qarac.inference import check_max_length, encode_batches, load_for_inference

    count, texts = _text_source(args)
    if count == 0:
        raise UsageError("no texts to encode; give texts as arguments or --file")
    output = npy_path(args.output)
    problem = file_write_problem(output)
    if problem is not None:
        raise UsageError(f"--output {output}: {problem}")
    model, tokenizer = load_for_inference(args.checkpoint, args.device)
    check_max_length(args.max_length, model)
    hidden = model.config.hidden_size

    def write(tmp: Path) -> None:
        # Filled batch by batch on disk: memory holds one batch of vectors, never all N.
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(count, hidden))
        start = 0
        for vectors in encode_batches(model, tokenizer, texts(), args.question, args.max_length, args.batch_size):
            array[start:start + len(vectors)] = vectors
            start += len(vectors)
        array.flush()
        del array

    atomic_write(output, write)
    print(f"{count} vectors of size {hidden} written to {output}")


def run_generate(args: argparse.Namespace) -> None:
    import numpy as np

    from qarac.inference import encode, generate, load_for_inference

    vectors = read_vectors(Path(args.vector)) if args.vector else None  # before the model: fail fast
    model, tokenizer = load_for_inference(args.checkpoint, args.device)
    if vectors is None:
        vectors = encode(model, tokenizer, args.text)
    for text in generate(model, tokenizer, vectors, args.max_length):
        print(text)


# The first bytes of every .npy file (numpy.lib.format.MAGIC_PREFIX).
NPY_MAGIC = b"\x93NUMPY"


def read_vectors(path: Path):
    """The array of a .npy file, never unpickled.

    Without the .npy header, `np.load` takes any file for a pickle and advises loading it
    "unsafely"; that advice is wrong for a file that is no array at all, so the header is checked first.

    Raises:
        UsageError: a missing file, a file that is not .npy, or a .npy of Python objects.
    """
    import numpy as np

    if path.is_dir():
        raise UsageError(f"--vector {path} is a directory; name a .npy file")
    if not path.is_file():
        raise UsageError(f"--vector {path} does not exist")
    with path.open("rb") as handle:
        if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise UsageError(f"--vector {path} is not a .npy array (it lacks the NumPy header); "
                             "give vectors saved by `qarac encode` or numpy.save")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise UsageError(f"--vector {path} holds Python objects, not numbers; give a numeric "
                             "(N, H) or (H,) array") from None
        raise UsageError(f"--vector {path} is not a readable .npy array: {error}") from None
    except OSError as error:
        raise UsageError(f"--vector {path} is not a readable .npy array: {error}") from None


COMMANDS = {"train": run_train, "encode": run_encode, "generate": run_generate}


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `qarac` and `python -m qarac`."""
    from qarac.checkpoint import CheckpointError
    from qarac.data.corpora import DataError

    from qarac.training.signals import TrainingInterrupted

    args = build_parser().parse_args(argv)
    if args.command == "train":
        names = [name for name in vars(args) if name != "command"]
        args.explicit = set(vars(build_parser(names).parse_args(argv))) - {"command"}
    try:
        COMMANDS[args.command](args)
    except TrainingInterrupted as stop:
        print(f"qarac {args.command}: {stop}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except (UsageError, CheckpointError, DataError, FileNotFoundError, ValueError) as error:
        message = " ".join(str(error).split())  # one line
        print(f"qarac {args.command}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
