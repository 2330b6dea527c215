"""Reference bundles: what the legacy computed, recorded once, as files that need no TensorFlow.

A bundle is a directory:

    manifest.json          schema version, library versions, model config, seeds, batch size,
                           the JSON-valued results (gradient census, warnings, losses, ...),
                           one entry per array (shape, dtype, what it is), the sha256 of
                           every other file of the bundle, and the bundle's digest
    arrays.safetensors     every array (the weights the legacy ran with, inputs, targets,
                           outputs, stages, gradients), by name
    model/                 the model's HF files besides its weights: config.json and the
                           tokenizer files

Arrays are safetensors, everything else JSON: nothing is pickled. A bundle is
written into a staging directory beside its destination and renamed into place,
so a failed write leaves an earlier bundle intact. Reading checks the schema
version, every file's hash, and that every array the manifest lists is there
with its shape and dtype, and raises `BundleError` (a one-line message naming
the problem) otherwise.

The digest is the sha256 of the manifest's canonical JSON without the digest
itself (`manifest_digest`): it covers every file's hash and every JSON-valued
result the verdict reads (the legacy's noise, its missing gradients, its
training losses, its determinism flags), so one hex string names everything a
check compares against; `qarac-parity check --expect-digest` pins it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import safetensors
import safetensors.numpy

from parity.manifest_shape import ShapeError, check_manifest_shape

# 2: the manifest carries its digest (`manifest_digest`), checked on reading.
SCHEMA_VERSION = 2
MANIFEST_NAME = "manifest.json"
ARRAYS_NAME = "arrays.safetensors"
MODEL_DIR = "model"


class BundleError(ValueError):
    """A reference bundle is missing, of another schema, edited, incomplete or corrupt."""


@dataclass
class Bundle:
    """A reference bundle in memory.

    Attributes:
        arrays: name -> array, e.g. "legacy/padded/output/encode_decode" (B, T, V).
        descriptions: name -> what the array is (kept in the manifest).
        results: JSON-valued results by name (e.g. the gradient census of each TF mode).
        meta: everything else of the manifest: versions, model config, seeds, batch size.
        model_dir: a directory of the model's HF files besides the weights (config.json,
            tokenizer files), or None.
        directory: where the bundle was read from, or None for one built in memory.
        digest: the manifest's digest (`manifest_digest`), for a bundle read from disk.
        schema_version: the schema it was read as (None for one built in memory; written as `SCHEMA_VERSION`).
    """

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    model_dir: Path | None = None
    directory: Path | None = None
    digest: str | None = None
    schema_version: int | None = None

    def add(self, name: str, array: np.ndarray, description: str) -> None:
        if name in self.arrays:
            raise ValueError(f"array {name!r} is already in the bundle")
        self.arrays[name] = np.ascontiguousarray(array)
        self.descriptions[name] = description

    def array(self, name: str) -> np.ndarray:
        try:
            return self.arrays[name]
        except KeyError:
            where = f"bundle {self.directory}" if self.directory else "the bundle"
            raise BundleError(f"{where} has no array {name!r}") from None

    def group(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays under `prefix/`, keyed by the rest of their name."""
        start = prefix.rstrip("/") + "/"
        return {name[len(start):]: value for name, value in self.arrays.items() if name.startswith(start)}


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _files_below(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)


def _stored_arrays(bundle: Bundle) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """(the arrays to store, the manifest's entry per array).

    An array identical to an earlier one (same dtype, shape and bytes: a stage's input is
    the previous stage's output, the LM head's output is the trainer's logits, the shared
    base's weights appear under both encoders) is stored once; its entry names it (`same_as`).
    """
    stored: dict[str, np.ndarray] = {}
    entries: dict[str, dict[str, Any]] = {}
    first: dict[str, str] = {}
    for name, value in sorted(bundle.arrays.items()):
        digest = hashlib.sha256(f"{value.dtype}{value.shape}".encode() + value.tobytes()).hexdigest()
        entry = {"shape": list(value.shape), "dtype": str(value.dtype), "description": bundle.descriptions[name]}
        if digest in first:
            entry["same_as"] = first[digest]
        else:
            first[digest] = name
            stored[name] = value
        entries[name] = entry
    return stored, entries


def write_bundle(bundle: Bundle, directory: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write `bundle` to `directory` atomically (staging directory, then rename).

    Raises:
        BundleError: `directory` exists and `overwrite` is False.
    """
    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise BundleError(f"{directory} already exists; pass overwrite to replace it")
    if directory.exists() and not replaceable(directory):
        raise BundleError(f"{directory} is not a reference bundle (no bundle {MANIFEST_NAME}); overwrite replaces "
                          "a bundle only, never other files")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".staging", dir=directory.parent))
    try:
        stored, entries = _stored_arrays(bundle)
        safetensors.numpy.save_file(stored, str(staging / ARRAYS_NAME), metadata={"format": "np"})
        if bundle.model_dir is not None:
            shutil.copytree(bundle.model_dir, staging / MODEL_DIR)
        manifest = {"schema_version": SCHEMA_VERSION, **bundle.meta, "results": bundle.results,
                    "arrays": entries,
                    "files": {str(p.relative_to(staging)): sha256_of(p) for p in _files_below(staging)}}
        manifest = json.loads(json.dumps(manifest, default=_json_default))  # as it will read back
        manifest["digest"] = manifest_digest(manifest)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        for path in [staging, *staging.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # mkdtemp's 0700: a bundle is meant to be shared
        _swap_into_place(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def replaceable(directory: Path) -> bool:
    """`overwrite` may replace `directory`: a bundle (a manifest of the bundle format), or an empty directory."""
    if not directory.is_dir() or directory.is_symlink():
        return False
    if not any(directory.iterdir()):
        return True
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    # Any schema version: `make reference` replaces a bundle of an older one.
    return isinstance(manifest, dict) and isinstance(manifest.get("schema_version"), int) \
        and isinstance(manifest.get("files"), dict) and isinstance(manifest.get("arrays"), dict)


def _swap_into_place(staging: Path, directory: Path) -> None:
    """Rename `staging` onto `directory`; an existing one is moved aside first and removed last."""
    if not directory.exists():
        os.replace(staging, directory)
        return
    old = directory.with_name(f".{directory.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(directory, old)
    os.replace(staging, directory)
    shutil.rmtree(old, ignore_errors=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no whitespace), its "digest" entry left out."""
    content = {key: value for key, value in manifest.items() if key != "digest"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# Older schemas a caller may ask to read, and what they lack: schema 1 had no manifest digest and no
# float64 run of the legacy (`parity.upgrade` adds one, recorded by the legacy, for `check`;
# `parity.reproduction.with_float64_run` borrows one to compare recordings).
OLDER_SCHEMAS = {1: "no manifest digest, no float64 run of the legacy"}


def read_manifest(directory: str | os.PathLike, schemas: tuple[int, ...] = (SCHEMA_VERSION,)) -> dict[str, Any]:
    """The manifest of a bundle, after checking its schema version (one of `schemas`), its digest
    (from schema 2 on) and every file's hash."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BundleError(f"bundle {directory} does not exist or is not a directory")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{directory} is not a reference bundle: {MANIFEST_NAME} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("schema_version") not in schemas:
        found = manifest.get("schema_version") if isinstance(manifest, dict) else None
        remedy = (f"`python -m parity.upgrade {directory} --out NEW` completes it ({OLDER_SCHEMAS[found]})"
                  if isinstance(found, int) and found in OLDER_SCHEMAS else "record the bundle again with this version")
        raise BundleError(f"{directory} has bundle schema version {found!r}; this qarac reads version "
                          f"{SCHEMA_VERSION}: {remedy}")
    if manifest["schema_version"] >= 2 and manifest.get("digest") != manifest_digest(manifest):
        raise BundleError(f"bundle file {path} was changed after recording (its content no longer matches its digest)")
    try:
        check_manifest_shape(manifest, path)
    except ShapeError as error:
        raise BundleError(str(error)) from None
    _check_files(directory, manifest["files"])
    return manifest


def _check_files(directory: Path, files: Mapping[str, str]) -> None:
    if ARRAYS_NAME not in files:
        raise BundleError(f"{directory / MANIFEST_NAME} lists no {ARRAYS_NAME}")
    for name, expected in sorted(files.items()):
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"{directory / MANIFEST_NAME} names {name!r}, a file outside the bundle")
        path = directory / name
        if not path.is_file():
            raise BundleError(f"bundle {directory} lacks {name}, which its manifest lists")
        if sha256_of(path) != expected:
            raise BundleError(f"bundle file {path} was changed after recording (sha256 differs from the manifest)")
    extra = sorted(str(p.relative_to(directory)) for p in _files_below(directory)
                   if str(p.relative_to(directory)) not in files)
    if extra:
        raise BundleError(f"bundle {directory} holds files its manifest does not list: {extra}")


def read_bundle(directory: str | os.PathLike, schemas: tuple[int, ...] = (SCHEMA_VERSION,)) -> Bundle:
    """Read and check a bundle (of one of `schemas`: only this version by default, see `OLDER_SCHEMAS`).

    Raises:
        BundleError: missing directory or manifest, another schema version, a file
            edited/added/removed after recording, an unreadable (e.g. truncated)
            safetensors file, or an array missing or of another shape/dtype than listed.
    """
    directory = Path(directory)
    manifest = read_manifest(directory, schemas)
    path = directory / ARRAYS_NAME
    # Read once, and hash what is loaded: the file may have been replaced since read_manifest hashed it.
    try:
        content = path.read_bytes()
    except OSError as error:
        raise BundleError(f"{path} could not be read: {error}") from error
    if hashlib.sha256(content).hexdigest() != manifest["files"][ARRAYS_NAME]:
        raise BundleError(f"bundle file {path} was changed after recording (sha256 differs from the manifest)")
    try:
        arrays = safetensors.numpy.load(content)
    except (safetensors.SafetensorError, OSError, ValueError) as error:
        raise BundleError(f"{path} is not a readable safetensors file: {error}") from error
    listed = manifest.get("arrays", {})
    for name, entry in listed.items():
        if "same_as" in entry and entry["same_as"] in arrays:
            arrays[name] = arrays[entry["same_as"]]
    missing = sorted(set(listed) - set(arrays))
    if missing:
        raise BundleError(f"bundle {directory} lacks arrays its manifest lists: {missing[:5]}"
                          f"{' ...' if len(missing) > 5 else ''}")
    for name, entry in listed.items():
        if list(arrays[name].shape) != entry["shape"] or str(arrays[name].dtype) != entry["dtype"]:
            raise BundleError(f"bundle array {name!r} is {arrays[name].dtype}{list(arrays[name].shape)}, "
                              f"the manifest lists {entry['dtype']}{entry['shape']}")
    meta = {k: v for k, v in manifest.items() if k not in ("schema_version", "results", "arrays", "files", "digest")}
    weights = directory / MODEL_DIR
    return Bundle(arrays={name: arrays[name] for name in listed},
                  descriptions={name: entry["description"] for name, entry in listed.items()},
                  results=manifest.get("results", {}), meta=meta,
                  model_dir=weights if weights.is_dir() else None, directory=directory,
                  digest=manifest.get("digest"), schema_version=manifest["schema_version"])


def check_same_model(bundle: Bundle, model_config: Mapping[str, Any], vocabulary: Mapping[str, int] | None = None) -> None:
    """Refuse to compare against a bundle recorded for another architecture or vocabulary.

    Args:
        model_config: the RoBERTa architecture keys (e.g. `QaracConfig.base`) of the model to check.
        vocabulary: token -> id of the tokenizer in use, when there is one.
    """
    recorded = bundle.meta.get("model_config", {})
    differing = sorted(key for key in set(recorded) & set(model_config) if recorded[key] != model_config[key])
    if differing:
        pairs = ", ".join(f"{key}: bundle {recorded[key]!r} vs model {model_config[key]!r}" for key in differing)
        raise BundleError(f"bundle {bundle.directory} was recorded for another model ({pairs})")
    digest = bundle.meta.get("vocabulary_sha256")
    if vocabulary is not None and digest is not None and vocabulary_sha256(vocabulary) != digest:
        raise BundleError(f"bundle {bundle.directory} was recorded with another vocabulary (token ids differ)")


def vocabulary_sha256(vocabulary: Mapping[str, int]) -> str:
    return hashlib.sha256(json.dumps(sorted(vocabulary.items())).encode()).hexdigest()
