"""The weight map as data: Keras variable names <-> PyTorch state-dict keys, layouts, drops.

A spec's map is a table of `Rule`s in the shape of torchtune's `convert_weights.py`: a Keras
name pattern, the PyTorch name pattern it becomes (`{}` stands for an index and takes the same
value on both sides), and the `Layout` that converts the arrays (a Dense kernel is (in, out),
a torch Linear weight (out, in): `TRANSPOSE`). A rule may join several names on either side
(an LSTM's one Keras bias is two torch biases: `split_sum`); `None` as the torch side drops a
Keras variable on purpose, `WeightMap.torch_only` declares torch keys with no Keras variable
(buffers such as `num_batches_tracked`), which keep the port's own value.

`WeightMap.match` pairs every name of both models, or raises `WeightMapError` naming what is
left over, matched twice or misshapen, before any array is copied. The reverse direction is the
same table read the other way (`Layout.to_keras`), never written twice; `round_trip` checks
that Keras -> torch -> Keras gives back every array bit for bit.

Gradients travel with the adjoint of the map (`Layout.gradient_to_torch`): where a Keras value
is the sum of two torch parameters, each of them gets the Keras gradient whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

Arrays = tuple[np.ndarray, ...]


class WeightMapError(ValueError):
    """The two models' weights do not map one to one; the message names the offending key."""


@dataclass(frozen=True)
class Layout:
    """How a rule's arrays convert.

    Attributes:
        name: what the conversion is, as the report shows it.
        to_torch: the Keras arrays (in the rule's order) -> the torch arrays.
        to_keras: the inverse: the torch arrays -> the Keras arrays.
        gradient_to_torch: the Keras gradients -> the torch gradients (the adjoint of `to_keras`);
            None: the same function as `to_torch` (true of every permutation and transpose).
    """

    name: str
    to_torch: Callable[..., Arrays]
    to_keras: Callable[..., Arrays]
    gradient_to_torch: Callable[..., Arrays] | None = None

    def gradients_to_torch(self, *gradients: np.ndarray) -> Arrays:
        return (self.gradient_to_torch or self.to_torch)(*gradients)


IDENTITY = Layout("as is", lambda *a: a, lambda *a: a)
TRANSPOSE = Layout("transposed", lambda a: (a.T,), lambda a: (a.T,))


def split_sum(parts: int = 2) -> Layout:
    """One Keras array that is the sum of `parts` torch arrays (an LSTM's bias: `b_ih + b_hh`).

    Keras -> torch puts the whole value in the first part and zeros in the others; torch -> Keras
    sums. A torch gradient of each part is the Keras gradient.
    """
    return Layout(f"sum of {parts}", lambda a: (a, *(np.zeros_like(a) for _ in range(parts - 1))),
                  lambda *a: (np.sum(np.stack(a), axis=0, dtype=a[0].dtype),),
                  lambda g: tuple(g for _ in range(parts)))


def gate_blocks(keras_order: str, torch_order: str, transpose: bool = True) -> Layout:
    """A recurrent kernel or bias whose last Keras axis holds gate blocks in `keras_order` (e.g.
    "zrh" for a Keras GRU) and whose first torch axis holds them in `torch_order` ("rzh")."""
    permutation = [keras_order.index(gate) for gate in torch_order]
    inverse = [torch_order.index(gate) for gate in keras_order]

    def reorder(array: np.ndarray, order: Sequence[int], axis: int) -> np.ndarray:
        blocks = np.split(array, len(order), axis=axis)
        return np.concatenate([blocks[i] for i in order], axis=axis)

    def to_torch(a):
        b = reorder(a, permutation, -1)
        return (b.T if transpose else b,)

    def to_keras(a):
        b = a.T if transpose else a
        return (reorder(b, inverse, -1),)

    return Layout(f"gates {keras_order}->{torch_order}{', transposed' if transpose else ''}", to_torch, to_keras)


def _names(side: str | Sequence[str] | None) -> tuple[str, ...]:
    if side is None:
        return ()
    return (side,) if isinstance(side, str) else tuple(side)


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{\}", r"(\d+)") + "$")


@dataclass(frozen=True)
class Rule:
    """One line of the table: Keras name(s) -> torch name(s) (None: dropped on purpose), and the layout."""

    keras: str | tuple[str, ...]
    torch: str | tuple[str, ...] | None
    layout: Layout = IDENTITY

    def keras_names(self) -> tuple[str, ...]:
        return _names(self.keras)

    def torch_names(self) -> tuple[str, ...]:
        return _names(self.torch)


@dataclass(frozen=True)
class Entry:
    """One rule applied: these Keras variables are these torch keys."""

    keras: tuple[str, ...]
    torch: tuple[str, ...]
    layout: Layout

    def describe(self) -> str:
        return f"{', '.join(self.keras)} -> {', '.join(self.torch) or 'dropped'} ({self.layout.name})"


@dataclass
class Matched:
    """The map applied to two models: entries, and what each side keeps for itself.

    Attributes:
        entries: one per rule application, in table order.
        dropped: Keras variables the table drops (rule with torch None).
        torch_kept: torch keys declared `torch_only`: the port keeps its own value.
    """

    entries: list[Entry] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    torch_kept: list[str] = field(default_factory=list)

    def to_torch(self, keras: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Keras arrays by variable name -> torch arrays by state-dict key (dropped ones left out)."""
        result = {}
        for entry in self.entries:
            if entry.torch:
                converted = entry.layout.to_torch(*(keras[name] for name in entry.keras))
                result.update({name: np.ascontiguousarray(value) for name, value in zip(entry.torch, converted)})
        return result

    def to_keras(self, torch_arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Torch arrays by key -> Keras arrays by variable name (the table read backwards)."""
        result = {}
        for entry in self.entries:
            if entry.torch:
                converted = entry.layout.to_keras(*(torch_arrays[name] for name in entry.torch))
                result.update({name: np.ascontiguousarray(value) for name, value in zip(entry.keras, converted)})
        return result

    def gradients_to_torch(self, keras: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray | None]:
        """Keras gradients by variable name (None: no gradient) -> torch gradients by key."""
        result: dict[str, np.ndarray | None] = {}
        for entry in self.entries:
            values = [keras.get(name) for name in entry.keras]
            if not entry.torch:
                continue
            if any(value is None for value in values):
                result.update({name: None for name in entry.torch})
                continue
            result.update(zip(entry.torch, entry.layout.gradients_to_torch(*values)))
        return result

    def round_trip(self, keras: Mapping[str, np.ndarray]) -> list[str]:
        """The Keras variables that do not come back bit for bit from Keras -> torch -> Keras."""
        back = self.to_keras(self.to_torch(keras))
        return [name for name, value in back.items()
                if value.shape != keras[name].shape or not np.array_equal(value, keras[name])]


@dataclass(frozen=True)
class WeightMap:
    """A spec's weight table.

    Attributes:
        rules: the table, Keras side first; `{}` in a pattern is an index, equal on both sides.
        torch_only: patterns of torch keys with no Keras variable, kept as the port has them.
    """

    rules: tuple[Rule, ...]
    torch_only: tuple[str, ...] = ()

    def match(self, keras_shapes: Mapping[str, tuple[int, ...]],
              torch_shapes: Mapping[str, tuple[int, ...]]) -> Matched:
        """Pair every Keras variable and torch key, checking the shapes the layout gives.

        Raises:
            WeightMapError: a name no rule covers, a name two rules cover, a rule's partner missing,
                or a shape the layout does not turn into the other side's.
        """
        matched = Matched()
        claimed_keras: dict[str, str] = {}
        claimed_torch: dict[str, str] = {}
        for rule in self.rules:
            for entry in _apply(rule, keras_shapes):
                for name in entry.keras:
                    _claim(claimed_keras, name, entry, "Keras variable")
                for name in entry.torch:
                    if name not in torch_shapes:
                        raise WeightMapError(f"weight map: {entry.describe()} names torch key {name!r}, which the "
                                             "port does not have")
                    _claim(claimed_torch, name, entry, "torch key")
                _check_shapes(entry, keras_shapes, torch_shapes)
                (matched.entries.append(entry) if entry.torch else matched.dropped.extend(entry.keras))
        kept = [name for name in torch_shapes if any(_pattern(p).match(name) for p in self.torch_only)]
        for name in kept:
            if name in claimed_torch:
                raise WeightMapError(f"weight map: torch key {name!r} is declared torch_only and mapped by "
                                     f"{claimed_torch[name]}")
        matched.torch_kept = sorted(kept)
        _require_covered(sorted(set(keras_shapes) - set(claimed_keras)), "Keras variables", "no rule maps")
        _require_covered(sorted(set(torch_shapes) - set(claimed_torch) - set(kept)), "torch keys",
                         "no rule maps and torch_only does not declare")
        return matched


def _apply(rule: Rule, keras_shapes: Mapping[str, tuple[int, ...]]) -> Iterable[Entry]:
    """Every application of `rule` to the Keras names: its first pattern picks the indices."""
    first, *others = rule.keras_names()
    for name in keras_shapes:
        found = _pattern(first).match(name)
        if found is None:
            continue
        indices = found.groups()
        keras = (name, *(other.format(*indices) for other in others))
        for partner in keras[1:]:
            if partner not in keras_shapes:
                raise WeightMapError(f"weight map: rule for {first!r} needs Keras variable {partner!r} beside "
                                     f"{name!r}; the model has none")
        yield Entry(keras, tuple(t.format(*indices) for t in rule.torch_names()), rule.layout)


def _claim(claimed: dict[str, str], name: str, entry: Entry, kind: str) -> None:
    if name in claimed:
        raise WeightMapError(f"weight map: {kind} {name!r} is mapped twice ({claimed[name]}; {entry.describe()})")
    claimed[name] = entry.describe()


def _check_shapes(entry: Entry, keras_shapes, torch_shapes) -> None:
    if not entry.torch:
        return
    probes = [np.zeros(keras_shapes[name], dtype=np.float32) for name in entry.keras]
    produced = [value.shape for value in entry.layout.to_torch(*probes)]
    expected = [tuple(torch_shapes[name]) for name in entry.torch]
    if len(produced) != len(expected) or any(tuple(a) != b for a, b in zip(produced, expected)):
        given = ", ".join(f"{n} {tuple(keras_shapes[n])}" for n in entry.keras)
        wanted = ", ".join(f"{n} {tuple(torch_shapes[n])}" for n in entry.torch)
        raise WeightMapError(f"weight map: {given} becomes {[tuple(p) for p in produced]} through "
                             f"'{entry.layout.name}', but the port holds {wanted}")


def _require_covered(left: list[str], kind: str, why: str) -> None:
    if left:
        shown = ", ".join(repr(name) for name in left[:6]) + (" ..." if len(left) > 6 else "")
        raise WeightMapError(f"weight map: {len(left)} {kind} that {why}: {shown}")
