"""For users' own tests: check a copy of the port against a reference bundle, without TensorFlow.

    from parity.testing import assert_matches_reference

    def test_my_port_matches_the_legacy():
        model = MyQaracTrainer(QaracConfig(base=...).legacy())   # the legacy preset
        assert_matches_reference(model, "reference/tiny")

The bundle's weights are loaded into `model` (strictly: same parameter names and
shapes as `qarac.QaracTrainerModel`), then `model` is judged by the same code as
`qarac-parity check` (`parity.check.check` with `model` as the port): every
output and stage of every recorded batch, the sharpened weight set included,
against its noise floor; the float64 exactness check where the bundle holds the
legacy's float64 run; and the gradients of the total loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from parity.check import check
from parity.compare import Comparison, ParityFailure, _structural_failure
from parity.reference import read_reference

# The checks of `check` that judge the model itself (the others describe the legacy or the bundle).
FORWARD_CHECKS = ("forward", "layers", "localised", "all_padding_row", "float64_exactness", "port_in_legacy_preset")
GRADIENT_CHECKS = ("gradient_parity", "gradient_missing_sets_agree", "backward_stages")


def assert_matches_reference(model: torch.nn.Module, bundle: str | Path, tolerance: float | None = None,
                             gradients: bool = True, spec: Any = None) -> Any:
    """Raise `ParityFailure` naming every output, stage or gradient of `model` that differs from the bundle's legacy.

    Args:
        model: a trainer in the legacy preset with `QaracTrainerModel`'s parameter names (and its
            constructor: `type(model)(model.config)` builds the float64 twin); its weights are
            replaced by the bundle's.
        bundle: a reference bundle directory (`qarac-parity record`).
        tolerance: a fixed absolute forward tolerance instead of the noise-floor verdict (as `check --tolerance`).
        gradients: also judge the gradients (gradient parity, missing sets, backward stages).
        spec: a `parity.core.Pair`: `model` is that pair's port (its parameters named as it likes: the
            spec's weight map decides) and `bundle` a bundle of that pair (`qarac-parity record --spec`);
            every check of `parity.core.judge` is judged. None: `model` is a QARAC trainer.

    Returns: the `ParityReport` of the check.

    Raises:
        BundleError: the bundle is unreadable, edited or incomplete.
        RuntimeError: the bundle's weights do not fit `model`.
        ParityFailure: some output, stage or gradient is over its bound.
    """
    if spec is not None:
        return _assert_pair(model, Path(bundle), spec, tolerance, gradients)
    report = check(read_reference(Path(bundle)), tolerance=tolerance, port=model)
    judged = FORWARD_CHECKS + (GRADIENT_CHECKS if gradients else ())
    failed = [name for name in judged if not report.checks.get(name, True)]
    if failed:
        raise ParityFailure(failures(report, failed))
    return report


def failures(report: Any, failed: list[str]) -> list[Comparison]:
    """The failing comparisons behind the failed checks, each named."""
    found = [Comparison(**c) for c in [*report.forward, *report.layers] if not c["passed"]]
    float64 = report.float64 or {}
    found += [_structural_failure(f"float64 {v['name']}", v["problem"] or f"relative error {v['rel_err']:.3g} over "
                                  f"{float64['bound']:.1g}", float64["bound"])
              for v in [*float64.get("values", []), *float64.get("gradients", [])] if not v["passed"]]
    found += [_structural_failure(f"gradient of {c['name']}", c.get("problem") or f"relative error "
                                  f"{c['max_rel_err']:.3g} over tolerance {c['tolerance']:.3g}", c["tolerance"])
              for c in report.gradient_parity if not c["passed"]]
    if report.first_introducing_stage:
        found.insert(0, _structural_failure(report.first_introducing_stage, "the first stage introducing an error", 0.0))
    if not found:
        found = [_structural_failure(name, "check failed", 0.0) for name in failed]
    return found


# The checks of a pair's report that judge gradients (left out with gradients=False).
PAIR_GRADIENT_CHECKS = ("gradient_parity", "gradient_missing_sets_agree", "gradients_finite")


def _assert_pair(model: torch.nn.Module, bundle: Path, spec: Any, tolerance: float | None, gradients: bool) -> Any:
    from parity.core import codec, pipeline
    from parity.core.report import failure_lines

    if tolerance is not None:
        raise ValueError("a pair is judged against its noise floors; a fixed tolerance applies to QARAC only")
    report = pipeline.check(spec, codec.read(bundle, spec.name), model)
    failed = [name for name, ok in report.checks.items() if not ok and (gradients or name not in PAIR_GRADIENT_CHECKS)]
    if failed:
        found = [_structural_failure(line.split(": ", 1)[0], line.split(": ", 1)[-1], 0.0) for line in failure_lines(report)]
        raise ParityFailure(found or [_structural_failure(name, "check failed", 0.0) for name in failed])
    return report
