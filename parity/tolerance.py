"""The forward verdict's rule, in one place: how far a port value may sit from the legacy's.

`check` judges every forward value (each output and stage of every batch, and each stage fed the
legacy's input) in one of two modes, chosen once per run (`Tolerance.for_model`):

- noise floor (the default): within `FLOOR_BOUND` times the value's measured float32 noise
  floor (`parity.noise`: the legacy's float32 error against its float64 run plus the port's own
  rounding, the latter counted only up to what the precision check allows: `value_floor`);
- fixed (`--tolerance X`, `assert_matches_reference(tolerance=X)`): within X absolute.

Values compared without a floor (the all-padding row's real rows) are held to the absolute
tolerance: X in fixed mode, else the model size's `fixed_tolerance`. The report's `verdict`
section is this object written out (`Tolerance.verdict`), and the Keras 3 column reads it back
(`Tolerance.from_verdict`) to judge its backends by the same rule.

The verdict's other bounds each belong to a scale of their own and are defined beside it:
gradients and backward stages relative to their largest element (`parity.agreement.RELATIVE_BOUND`),
the float64 check relative to float64 round-off (`parity.exactness.FLOAT64_BOUND`), training losses
per step (`parity.training.TRAINING_TOLERANCE`). Comparing a fresh legacy recording with a shipped
bundle is another comparison, legacy against legacy, with its own bound (`parity.reproduction`).
Precision parity (`parity.precision`) is judged here too, because the floor depends on it: the port's
own float32 error (`|port32 - port64|`) may be at most `PRECISION_BOUND` times the legacy's
(`|legacy32 - legacy64|`, never below one ulp of the value), and its reordered and repeated runs may
spread at most as far. Nothing here imports a framework.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

# Verdict bound in floor units. By the triangle inequality of `parity.noise` a faithful port stays
# within 1x its floor plus the float64 disagreement (below 1e-9 floors); measured clean worst: see
# bench/README.md section 6. 2x leaves that margin twice over, and is what every planted bug of the
# mutation suite is judged against (bench/README.md section 5).
FLOOR_BOUND = 2.0
# Absolute tolerance on the tiny model: float32 through two frameworks' kernels (oneDNN in TF, ATen
# in torch) agrees to ~1e-6 on values of order 1.
TINY_TOLERANCE = 1e-5
# Measured on roberta-base shapes with random weights (bench/parity_speed.py, worst 3.4e-5):
# twelve layers of float32 from two kernel libraries drift further than two.
ROBERTA_BASE_TOLERANCE = 1e-4

# How many times the legacy's own float32 error (never below one ulp of the value) the port's own
# float32 error, and its reordering/repeat spread, may be (`within_precision`, `value_floor`). Measured on
# the clean port, worst over every output and stage of the four cases, port float32 error (or spread) /
# max(legacy float32 error, ulp) (`qarac-parity check BUNDLE --json R`: `precision.worst_ratio` and
# `worst_spread_ratio`; AMD EPYC, 2 cores):
# reference/tiny 4.17 (max_length.trainer.consistency, a cosine near 0 whose ulp is small beside the
# error of the vectors it comes from; next 3.13), spread 3.13; tests/fixtures/reference-tiny-intel-xeon
# 1.90, spread 1.96; median about 0.97; roberta-base shapes 6.60 (the same cosine; next 2.40), spread 0
# (bench/README.md section 6.1). 10 leaves 2.4x over the tiny bundles' worst, 1.5x over roberta-base's; the least planted precision loss (float16 softmax) is caught at 138 floors forward
# (bench/README.md section 5.0).
PRECISION_BOUND = 10.0

NOISE_FLOOR, FIXED = "noise floor", "fixed tolerance"

# How far a recording's float32 value may sit from the same recording's float64 run, relative to the
# value's largest float64 magnitude: what float32 arithmetic through the model can explain. A recorded
# value beyond it is not the legacy's float32 result (an edited or unrelated array), and would widen its
# own floor (the floor holds |legacy32 - legacy64|). Measured worst, the ratio judged here (AMD EPYC):
# 2.5e-6 on reference/tiny (sharp: encode_decode), 1.9e-6 on the Intel Xeon recording (max_length:
# consistency), both by `parity.reference.float64_inconsistencies`; 3.0e-7 on the user pair's bundle
# (`parity.core.codec.float64_inconsistencies`). 1e-3 is 400x the worst; a bug-sized edit is O(1).
RECORDING_CONSISTENCY_BOUND = 1e-3


def recording_consistent(error: float, scale: float) -> bool:
    """A recorded float32 value `error` away from its float64 run, of largest float64 magnitude `scale`."""
    return error <= RECORDING_CONSISTENCY_BOUND * scale


def fixed_tolerance(model_config: Mapping[str, Any]) -> float:
    """The absolute tolerance of a model size (`model_config`: the RoBERTa architecture, as recorded)."""
    tiny = int(model_config["hidden_size"]) <= 64 and int(model_config.get("num_hidden_layers", 12)) <= 2
    return TINY_TOLERANCE if tiny else ROBERTA_BASE_TOLERANCE


@dataclass(frozen=True)
class Tolerance:
    """The forward verdict's rule for one run.

    Attributes:
        absolute: the fixed tolerance (fixed mode), else the one for values compared without a floor.
        bound_in_floors: the bound in noise-floor units; None in fixed mode.
        given: the tolerance the caller gave (`--tolerance`), None in noise-floor mode.
    """

    absolute: float
    bound_in_floors: float | None = FLOOR_BOUND
    given: float | None = None

    @classmethod
    def for_model(cls, model_config: Mapping[str, Any], tolerance: float | None = None) -> "Tolerance":
        """The rule of a run: `tolerance` (a number) fixes it, None judges in noise-floor units."""
        if tolerance is not None:
            return cls(float(tolerance), None, tolerance)
        return cls(fixed_tolerance(model_config))

    @classmethod
    def from_verdict(cls, verdict: Mapping[str, Any], model_config: Mapping[str, Any]) -> "Tolerance":
        """The rule a report's `verdict` section names (`verdict`), for the same model."""
        if verdict.get("mode") == FIXED:
            return cls.for_model(model_config, float(verdict.get("absolute_tolerance") or TINY_TOLERANCE))
        return cls(fixed_tolerance(model_config), verdict.get("bound_in_floors") or FLOOR_BOUND)

    @property
    def fixed(self) -> bool:
        return self.bound_in_floors is None

    def without_floors(self) -> "Tolerance":
        """The same rule where no floor was measured: the absolute tolerance alone."""
        return Tolerance(self.absolute, None, self.given)

    def verdict(self) -> dict[str, Any]:
        """The report's `verdict` section."""
        return {"mode": FIXED if self.fixed else NOISE_FLOOR, "bound_in_floors": self.bound_in_floors,
                "absolute_tolerance": self.given}


def precision_allowance(ulp: float, legacy_float64: float | None) -> float:
    """How far the port's own float32 rounding may move a value: `PRECISION_BOUND` times the legacy's
    float32 error against its float64 run (`legacy_float64`), never below one ulp of the value; where
    no float64 run of the legacy was recorded (None), `PRECISION_BOUND` ulps."""
    return PRECISION_BOUND * max(legacy_float64 or 0.0, ulp)


def within_precision(port_error: float, ulp: float, legacy_float64: float | None) -> bool:
    """The port's own float32 error (or spread) on a value is within the allowance (`precision_allowance`)."""
    return port_error <= precision_allowance(ulp, legacy_float64)


def precision_ratio(port_error: float, ulp: float, legacy_float64: float | None) -> float:
    """The port's own float32 error in units of the legacy's (never below one ulp): judged against `PRECISION_BOUND`."""
    scale = max(legacy_float64 or 0.0, ulp)
    if scale > 0:
        return port_error / scale
    return 0.0 if port_error == 0 else float("inf")  # an all-zero value: any error is infinitely many ulps


def value_floor(ulp: float, legacy_own: float, port_own: float, legacy_float64: float | None) -> float:
    """A value's float32 noise floor, built from the legacy's side: the port cannot inflate it.

    floor = max(ulp, legacy_own + min(port_own, allowance)), allowance = `precision_allowance`:
    the port's own rounding counts only up to what the precision check allows, so a port losing
    precision in its float32 path (or non-deterministic) does not explain its error by its own noise.

    Args:
        ulp: one float32 ulp of the value's largest legacy magnitude.
        legacy_own: the legacy's largest own variant (its float32 run against its float64 run, its
            permuted batch).
        port_own: the port's largest own variant (its float64 twin, permuted batch, one thread, repeat).
        legacy_float64: the legacy's float32 error against its float64 run; None where none was recorded
            (the allowance is then `PRECISION_BOUND` ulps).
    """
    return max(ulp, legacy_own + min(port_own, precision_allowance(ulp, legacy_float64)))
