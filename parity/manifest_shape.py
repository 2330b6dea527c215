"""The shape of a bundle's manifest, checked when it is read.

A manifest is JSON that a person can edit: a string where a number belongs, or a
list emptied, would otherwise surface as a traceback deep in the comparison.
`check_manifest_shape` walks the manifest against `MANIFEST_SHAPE` and raises a
one-line `BundleError` naming the file, the place (`results.parameters`) and
what was expected. Keys the shape does not describe are left alone; keys it
requires are the ones every bundle has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Number:
    """A JSON number (int or float, not a bool); NaN and the infinities included (a floor may be inf)."""


class Anything:
    """Any JSON value."""


@dataclass(frozen=True)
class ListOf:
    item: Any
    min_length: int = 0


@dataclass(frozen=True)
class MapOf:
    """An object with string keys and values of one shape."""

    value: Any
    min_length: int = 0


@dataclass(frozen=True)
class Fields:
    """An object with known keys (others allowed); `required` must be present."""

    shapes: dict[str, Any]
    required: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Optional:
    """The shape, or null."""

    shape: Any


@dataclass(frozen=True)
class Tree:
    """Nested objects whose leaves have the shape `leaf` (an object may be empty: a stage with no floor)."""

    leaf: Any


NAMES = ListOf(str)
LOSSES = ListOf(MapOf(Number, min_length=1), min_length=1)  # one {objective: loss} per step

CAPTURE_ORDERS = MapOf(ListOf(str, min_length=1), min_length=1)  # case -> stages in the order they ran

MANIFEST_SHAPE = Fields({
    "schema_version": int,
    "digest": str,  # from schema 2 on
    "files": MapOf(str, min_length=1),
    "arrays": MapOf(Fields({"shape": ListOf(int), "dtype": str, "description": str, "same_as": str},
                           required=frozenset({"shape", "dtype", "description"}))),
    "batch_size": int,
    "seed": int,
    "model": str,
    "model_config": MapOf(Anything),
    "vocabulary_sha256": str,
    "legacy_versions": MapOf(str),
    "results": Fields({
        "capture_orders": CAPTURE_ORDERS,
        "backward_order": ListOf(str, min_length=1),
        "parameters": ListOf(str, min_length=1),
        "fit_missing": NAMES,
        "fit_warning": NAMES,
        "gradients_missing": MapOf(NAMES, min_length=1),
        "determinism": MapOf(bool),
        "weight_summary": MapOf(Anything),
        "record_timings_s": MapOf(Number),
        "noise_floors": Fields({"schema_version": int, "variants": ListOf(str, min_length=1),
                                "legacy": Tree(Optional(Number))}, required=frozenset({"legacy"})),
        "training": Optional(Fields({"settings": MapOf(Anything), "eager": LOSSES, "graph": LOSSES},
                                    required=frozenset({"settings", "eager", "graph"}))),
        # From schema 2 on: the legacy's float64 run (schema 1 has none; `check` completes one).
        "float64": Optional(Fields({"capture_orders": CAPTURE_ORDERS, "gradients_missing": NAMES,
                                    "substitutes": MapOf(str)},
                                   required=frozenset({"capture_orders", "gradients_missing", "substitutes"}))),
    }),
}, required=frozenset({"schema_version", "files", "arrays"}))


class ShapeError(ValueError):
    """Where (a dotted path) and what is wrong."""


def check_manifest_shape(manifest: Any, path: Path) -> None:
    """Raises parity.bundle.BundleError (one line, naming `path` and the place) on a manifest of another shape."""
    from parity.bundle import BundleError

    try:
        _check(manifest, MANIFEST_SHAPE, "")
    except ShapeError as error:
        raise BundleError(f"{path}: {error}; record the bundle again (qarac-parity record)") from None


def _describe(shape: Any) -> str:
    if shape is Number:
        return "a number"
    if shape is int:
        return "an integer"
    if shape is str:
        return "a string"
    if shape is bool:
        return "true or false"
    if isinstance(shape, ListOf):
        return "a list"
    if isinstance(shape, Optional):
        return f"{_describe(shape.shape)} or null"
    return "an object"


def _found(value: Any) -> str:
    text = repr(value)
    return f"{text[:40]}{'...' if len(text) > 40 else ''} ({type(value).__name__})"


def _child(where: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    plain = isinstance(key, str) and key.isidentifier()
    return f"{where}.{key}" if plain and where else (key if plain else f"{where}[{key!r}]")


def _check(value: Any, shape: Any, where: str) -> None:
    wrong = ShapeError(f"{where or 'the manifest'} is {_found(value)}, expected {_describe(shape)}")
    if shape is Anything:
        return
    if isinstance(shape, Optional):
        if value is not None:
            _check(value, shape.shape, where)
        return
    if shape is Number:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        return
    if shape is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return
    if shape in (str, bool):
        if not isinstance(value, shape):
            raise wrong
        return
    if isinstance(shape, ListOf):
        if not isinstance(value, list):
            raise wrong
        if len(value) < shape.min_length:
            raise ShapeError(f"{where} has {len(value)} items, expected at least {shape.min_length}")
        for index, item in enumerate(value):
            _check(item, shape.item, _child(where, index))
        return
    if not isinstance(value, dict):
        raise wrong
    if isinstance(shape, MapOf):
        if len(value) < shape.min_length:
            raise ShapeError(f"{where} is empty, expected an object with at least {shape.min_length} key(s)")
        for key, item in value.items():
            _check(item, shape.value, _child(where, key))
    elif isinstance(shape, Tree):
        for key, item in value.items():
            _check(item, shape if isinstance(item, dict) else shape.leaf, _child(where, key))
    elif isinstance(shape, Fields):
        missing = sorted(shape.required - set(value))
        if missing:
            raise ShapeError(f"{where or 'the manifest'} lacks {missing}")
        for key, item in value.items():
            if key in shape.shapes:
                _check(item, shape.shapes[key], _child(where, key))

