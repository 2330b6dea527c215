"""Saving and loading: QARAC modules as safetensors checkpoints, RoBERTa bases
from any local HF directory.

A QARAC checkpoint directory holds `qarac_config.json` (the model class and its
`QaracConfig`) and `model.safetensors`. Shared storage (the encoder base used by
both encoders, the LM head tied to the word embeddings) is written once and
re-tied on load, so a reload is bit-exact and keeps the sharing. Files are
written beside their destination and renamed into place: an interrupted save
leaves the previous checkpoint intact. Nothing here unpickles.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import safetensors
import safetensors.torch
import torch
from torch import nn

from qarac import _hf  # noqa: F401
from qarac.base_weights import check_base_weights
from qarac.config import QaracConfig
from qarac.errors import CheckpointError  # noqa: F401  (raised here, and imported from here by callers)
from transformers import RobertaConfig, RobertaModel
from transformers.utils import logging as hf_logging

CONFIG_NAME = "qarac_config.json"
WEIGHTS_NAME = "model.safetensors"
# 2: qarac_config.json holds the sha256 of every file saved with it (`files`), and of the tokenizer.
FORMAT_VERSION = 2

ModuleT = TypeVar("ModuleT", bound="PretrainedMixin")


def default_file_mode() -> int:
    """0666 less the umask: the mode `open()` gives a new file (`mkstemp` gives 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it onto `path`.

    The file gets the user's normal permissions, as if written in place.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(tmp))
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def file_write_problem(path: Path) -> str | None:
    """Why `atomic_write(path, ...)` would fail, found before any long work; None if it would not.

    The directory is probed by creating (and removing) a file in it, as `atomic_write` will:
    permission bits alone say nothing about /proc, a read-only mount, or a process run as root.
    """
    path = Path(path)
    if path.is_dir():
        return "it is a directory; name a file"
    parent = path.absolute().parent
    existing = parent
    while not existing.exists() and not existing.is_symlink():
        existing = existing.parent
    if existing.is_symlink() and not existing.exists():
        return f"{existing} is a broken symbolic link"
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    if existing != parent:
        missing = parent
        while missing.parent != existing:
            missing = missing.parent
        return f"directory {missing} does not exist"
    try:
        handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
    except OSError as error:
        return f"cannot create files in {parent} ({error.strerror or error})"
    os.close(handle)
    os.unlink(probe)
    return None


def _require_directory(directory: Path, what: str) -> None:
    if not directory.exists():
        raise CheckpointError(f"{what} directory {directory} does not exist")
    if not directory.is_dir():
        raise CheckpointError(f"{what} path {directory} is not a directory")


def read_checkpoint_record(directory: str | os.PathLike) -> dict[str, Any]:
    """The JSON of a checkpoint's `qarac_config.json`: model class, config, file digests and,
    when it was saved with one, the digest of its tokenizer."""
    directory = Path(directory)
    _require_directory(directory, "checkpoint")
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a QARAC checkpoint: {CONFIG_NAME} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is corrupt or not a QARAC config: {error}") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is corrupt or not a QARAC config: it holds no JSON object")
    return data


def read_checkpoint_config(directory: str | os.PathLike) -> tuple[str, QaracConfig]:
    """(model class name, config) of a QARAC checkpoint directory."""
    data = read_checkpoint_record(directory)
    try:
        return data["model_class"], QaracConfig.from_dict(data["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{Path(directory) / CONFIG_NAME} is corrupt or not a QARAC config: {error}") from error


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def verify_files(directory: Path, files: Any) -> None:
    """Every file `qarac_config.json` lists is there with the sha256 it was saved with.

    Raises:
        CheckpointError: no digests (saved by an older qarac), a listed file missing, or one changed.
    """
    if not isinstance(files, dict) or WEIGHTS_NAME not in files:
        raise CheckpointError(f"{directory / CONFIG_NAME} lists no file digests (saved by an older qarac?); "
                              "save the checkpoint again with this version")
    for name, expected in sorted(files.items()):
        path = directory / name
        if Path(name).name != name or not path.is_file():
            raise CheckpointError(f"{directory} lacks {name}, which its {CONFIG_NAME} lists")
        if sha256_of(path) != expected:
            cause = "the file is corrupt or was edited" if name == WEIGHTS_NAME else \
                "a checkpoint loads only with the tokenizer files it was saved with"
            raise CheckpointError(f"{path} was changed after saving (sha256 differs from the one in {CONFIG_NAME}): "
                                  f"{cause}")


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"weights file {path} is missing")
    try:
        return safetensors.torch.load_file(path)
    except (safetensors.SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file (corrupt or truncated?): {error}") from error


def _check_keys(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Every parameter must be present (directly or through a tied alias), nothing extra."""
    expected = module.state_dict(keep_vars=True)
    missing = []
    for name, tensor in expected.items():
        if name not in state and not any(other in state and expected[other] is tensor for other in expected):
            missing.append(name)
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match {type(module).__name__}: missing weights {missing[:8]}"
                              f"{' ...' if len(missing) > 8 else ''}, unexpected weights {unexpected[:8]}"
                              f"{' ...' if len(unexpected) > 8 else ''}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(f"{path}: weight {name} has shape {tuple(tensor.shape)}, the model expects "
                                  f"{tuple(expected[name].shape)}")


class PretrainedMixin:
    """`save_pretrained` / `from_pretrained` for the QARAC modules (safetensors)."""

    config: QaracConfig

    def save_pretrained(self, directory: str | os.PathLike, tokenizer=None) -> Path:
        """Write the weights, then (with `tokenizer`) the tokenizer's files, then `qarac_config.json`
        holding the sha256 of each of them and the tokenizer's content digest (`tokenizer_sha256`)."""
        from qarac.tokenizer import tokenizer_sha256

        directory = Path(directory)
        atomic_write(directory / WEIGHTS_NAME, lambda tmp: safetensors.torch.save_model(self, str(tmp)))
        names = [WEIGHTS_NAME]
        payload = {"format_version": FORMAT_VERSION, "model_class": type(self).__name__, "config": self.config.to_dict()}
        if tokenizer is not None:
            written = {Path(name).name for name in tokenizer.save_pretrained(str(directory))}
            names += sorted(name for name in written if (directory / name).is_file())
            payload["tokenizer_sha256"] = tokenizer_sha256(tokenizer)
        payload["files"] = {name: sha256_of(directory / name) for name in names}
        atomic_write_text(directory / CONFIG_NAME, json.dumps(payload, indent=2, sort_keys=True))
        return directory

    @classmethod
    def from_pretrained(cls: type[ModuleT], directory: str | os.PathLike,
                        map_location: str | torch.device = "cpu") -> ModuleT:
        """Rebuild the module saved by `save_pretrained`.

        Raises:
            CheckpointError: the directory is missing, holds another kind of
                module, or its weights are corrupt, missing, extra or misshapen.
        """
        directory = Path(directory)
        class_name, config = read_checkpoint_config(directory)
        files = read_checkpoint_record(directory).get("files")
        if class_name != cls.__name__:
            raise CheckpointError(f"{directory} holds a {class_name}, not a {cls.__name__}; "
                                  f"load it with {class_name}.from_pretrained")
        module = cls(config)
        path = directory / WEIGHTS_NAME
        state = load_safetensors(path)
        _check_keys(module, state, path)
        verify_files(directory, files)  # after the key check, whose message says more about a wrong file
        module.load_state_dict(state, strict=False)
        return module.to(map_location)


def load_base_model(directory: str | os.PathLike, config: QaracConfig | None = None,
                    is_decoder: bool = False) -> RobertaModel:
    """A RoBERTa base model from a local HF checkpoint directory (safetensors only).

    Args:
        directory: holds `config.json` (model_type "roberta") and `model.safetensors`.
        config: when given, the base is built with its options (pooler, attention kernel).
        is_decoder: build the decoder base (causal self-attention).

    Raises:
        CheckpointError: missing directory, not a RoBERTa config, no safetensors
            weights (pickled `.bin` files are refused), corrupt weights, or
            missing, unexpected or wrong-shaped tensors (`qarac.base_weights`).
    """
    directory = Path(directory)
    roberta_config = read_roberta_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        pickled = sorted(p.name for p in directory.glob("*.bin"))
        hint = f" (found {pickled}: pickled weights are not loaded; convert them to safetensors)" if pickled else ""
        raise CheckpointError(f"{directory} has no {WEIGHTS_NAME}{hint}")
    keep_pooler = True if config is None else config.keep_pooler
    # transformers would fill a missing tensor randomly and only warn: refuse it first.
    check_base_weights(directory, roberta_config, pooler=keep_pooler)
    options: dict[str, Any] = {"is_decoder": is_decoder, "add_cross_attention": False}
    if config is not None:
        options["attn_implementation"] = config.attn_implementation
    try:
        with no_progress_bar():
            return RobertaModel.from_pretrained(directory, add_pooling_layer=keep_pooler, use_safetensors=True,
                                                local_files_only=True, **options)
    except (OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"could not load the RoBERTa weights in {directory}: {error}") from error


@contextlib.contextmanager
def no_progress_bar() -> Iterator[None]:
    """transformers 5 draws a progress bar on stderr per `from_pretrained` / `save_pretrained`; here each is one step of a command."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def read_roberta_config(directory: str | os.PathLike) -> RobertaConfig:
    directory = Path(directory)
    _require_directory(directory, "model")
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory} is not an HF model directory: config.json is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from error
    if data.get("model_type") != "roberta":
        raise CheckpointError(f"{directory} is not a RoBERTa checkpoint: config.json has model_type "
                              f"{data.get('model_type')!r}, expected 'roberta'")
    return RobertaConfig.from_pretrained(directory, local_files_only=True)
