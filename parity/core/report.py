"""The core's report, formatted: the verdict line, the failing values, a table per case (rich)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from parity.core.judge import PairReport


def verdict_line(report: PairReport) -> str:
    """One line: passed, or the failed checks and the first stage named by each."""
    if report.passed:
        worst = max((v.ratio for v in report.values), default=0.0)
        return f"parity {report.pair}: PASSED (worst forward error {worst:.2f} floors)"
    failed = [name for name, ok in report.checks.items() if not ok]
    located = {"first failing stage": report.first_failing_stage,
               "precision drops first at": report.first_precision_stage,
               "non-deterministic first at": report.first_nondeterministic_stage,
               "float64 differs first at": report.first_float64_stage}
    where = "; ".join(f"{label} {stage}" for label, stage in located.items() if stage)
    return f"parity {report.pair}: FAILED checks: {', '.join(failed)}" + (f"; {where}" if where else "")


def failure_lines(report: PairReport, limit: int = 12) -> list[str]:
    """The failing values, worst first: name, what failed, by how much."""
    lines = []
    for value in report.values + report.gradients:
        reasons = []
        if value.problem:
            reasons.append(value.problem)
        elif not value.passed:
            reasons.append(f"error {value.error:.3g} = {value.ratio:.3g} floors")
        if not value.precision_passed:
            reasons.append(f"float32 error {value.precision_ratio:.3g}x the original's")
        if not value.determinism_passed:
            reasons.append(f"reordering moves it {value.port_reorder:.3g} (original {value.keras_reorder:.3g})")
        if not value.float64_passed:
            reasons.append(f"float64 relative error {value.float64_rel_err:.3g}")
        if reasons:
            lines.append(f"{value.name}: " + "; ".join(reasons))
    census = report.census
    torch_missing, keras_missing = set(census["torch"].missing), set(census["keras/eager"].missing)
    if torch_missing != keras_missing:
        lines.append(f"gradients missing in the port only: {sorted(torch_missing - keras_missing)}; "
                     f"in the original only: {sorted(keras_missing - torch_missing)}")
    return lines[:limit]


def print_report(report: PairReport, console: Console) -> None:
    table = Table(title=f"{report.pair}: every value against its floor")
    for column in ("value", "error", "floor", "floors", "precision", "float64 rel"):
        table.add_column(column, justify="left" if column == "value" else "right")
    for value in report.values + report.gradients:
        ok = value.passed and value.precision_passed and value.float64_passed and value.determinism_passed
        table.add_row(value.name, f"{value.error:.2e}", f"{value.floor:.2e}", f"{value.ratio:.2f}",
                      f"{value.precision_ratio:.2f}", f"{value.float64_rel_err:.1e}",
                      style=None if ok else "red")
    console.print(table)
    for mode, found in report.census.items():
        console.print(f"gradients {mode}: {len(found.missing)} missing, {len(found.zero)} zero, "
                      f"{len(found.nonfinite)} non-finite")


def write_json(report: PairReport, path: Path) -> None:
    """The report as JSON, written atomically (a failed write leaves an earlier file intact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(report.to_dict(), out, indent=1, default=float)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
