"""Formatting of a `ParityReport`: terminal tables (rich), JSON, Markdown.

Files are written atomically: a failed run leaves an earlier report intact.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table

from parity.results import ParityReport
from qarac.checkpoint import atomic_write_text

# 2: non-finite numbers written as strings ("nan", "inf", "-inf"); the float64 and bundle sections.
JSON_SCHEMA_VERSION = 2


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3g}"
    return str(value)


def _short(names: Iterable[str], limit: int | None = 3) -> str:
    """Names joined by commas; past `limit` (None: no limit) a count of the rest, "(+N)"."""
    names = list(names)
    if limit is None or len(names) <= limit:
        return ", ".join(names) if names else "none"
    return ", ".join(names[:limit]) + f" (+{len(names) - limit})"


# --- rows shared by the terminal and Markdown renderings ---------------------------------------

def forward_rows(report: ParityReport) -> list[list[str]]:
    return [[c["name"], _fmt(c["max_abs_err"]), _fmt(c["max_rel_err"]), _fmt(c["p99_abs_err"]),
             f"{c['cosine']:.8f}" if not math.isnan(c["cosine"]) else "nan", str(tuple(c["worst_index"])),
             _fmt(c["padding_max_abs_err"]), _fmt(c["tolerance"]), c["problem"] or _fmt(c["passed"])]
            for c in report.forward]


FORWARD_HEADER = ["output", "max abs err", "rel err @ worst", "p99 abs err", "cosine", "worst (b, t, ...)",
                  "padding max err", "tol", "result"]


def layer_rows(report: ParityReport) -> list[list[str]]:
    return [[c["name"], _fmt(c["max_abs_err"]), _fmt(c["p99_abs_err"]), _fmt(c["padding_max_abs_err"]),
             _fmt(c["passed"])] for c in report.layers]


LAYER_HEADER = ["stage", "max abs err", "p99 abs err", "padding max err", "result"]


def stage_error_rows(report: ParityReport, case: str) -> list[list[str]]:
    """Per stage: error accumulated in the real forward beside the error the stage introduces itself."""
    ratio = lambda value: "-" if value is None else f"{value:.2f}x"  # noqa: E731
    return [[row["stage"], _fmt(row["accumulated_max_abs_err"]), _fmt(row["introduced_max_abs_err"]),
             _fmt(row["noise_floor"]), ratio(row["accumulated_floor_ratio"]), ratio(row["introduced_floor_ratio"]),
             _fmt(row["introduced_passed"])] for row in report.stage_errors.get(case, [])]


def backward_rows(report: ParityReport) -> list[list[str]]:
    """Per stage: the input gradient the port's stage passes on, fed the legacy's input and upstream gradient."""
    return [[c["name"], _fmt(c["max_abs_err"]), _fmt(c["tolerance"]), _fmt(c["passed"])]
            for c in report.stage_gradient_errors]


BACKWARD_HEADER = ["stage", "introduced input-gradient error (relative to its largest)", "tol", "result"]


STAGE_ERROR_HEADER = ["stage", "accumulated", "introduced", "noise floor", "accumulated / floor",
                      "introduced / floor", "introduced within bound"]


def gradient_rows(report: ParityReport, limit: int | None = 3) -> list[list[str]]:
    """One row per framework and mode; `limit` names per list (None: all, as the Markdown has them)."""
    rows = []
    for mode, flow in report.gradients.items():
        causes = sorted(set(flow.get("causes", {}).values()))
        rows.append([mode, str(len(flow["missing"])), _short(flow["missing"], limit), str(len(flow["zero"])),
                     str(len(flow["nonfinite"])), "; ".join(cause.split(":")[0] for cause in causes) or "-"])
    return rows


GRADIENT_HEADER = ["mode", "missing", "missing parameters", "all-zero", "non-finite", "cause"]


def reachability_rows(report: ParityReport, framework: str) -> tuple[list[str], list[list[str]]]:
    matrix = report.reachability[framework]
    objectives = list(next(iter(matrix.values())))
    return ["parameter group", *objectives], [[group, *("yes" if row[o] else "." for o in objectives)]
                                               for group, row in matrix.items()]


def deviation_rows(report: ParityReport) -> list[list[str]]:
    rows = []
    for d in report.deviations:
        outputs = ", ".join(f"{k} {v:.3g}" for k, v in d["output_change"].items())
        explained = max(d.get("explained_change", {}).values(), default=0.0)
        unexplained = max(d.get("unexplained_change", {}).values(), default=0.0)
        verdict = "changes nothing it claims" if d.get("ineffective") else _fmt(d.get("passed", True))
        rows.append([d["option"], outputs, f"{d['loss_change']['total']:.3g}", str(d["parameters_removed"]),
                     f"{explained:.3g}", f"{unexplained:.3g}", verdict, d["explanation"]])
    return rows


DEVIATION_HEADER = ["option (legacy -> fixed)", "max output change", "total loss change", "params removed",
                    "explained (in declared region)", "unexplained", "result", "why"]


SUMMARY_HEADER = ["quantity", "value"]


def summary_rows(report: ParityReport, limit: int | None = 3) -> list[list[str]]:
    w = report.weights
    worst_grad = max((c["max_rel_err"] for c in report.gradient_parity), default=float("nan"))
    tolerance = report.gradient_parity[0]["tolerance"] if report.gradient_parity else float("nan")
    return [
        ["weights mapped", str(w["mapped"])],
        ["legacy-only / PyTorch-only / shape mismatches", f"{len(w['tf_only'])} / {len(w['pt_only'])} / {len(w['mismatched'])}"],
        ["tied parameters", _short(w["tied"], limit)],
        ["shared groups", str(len(w["shared"]))],
        ["PT -> TF -> PT round trip bit-exact", _fmt(w["round_trip_bit_exact"])],
        ["verdict", _verdict(report)],
        ["worst forward error in noise floors", _worst_ratio(report.forward)],
        ["first stage over tolerance", report.first_failing_stage or "none"],
        ["first stage introducing error over its bound", report.first_introducing_stage or "none"],
        ["first stage introducing backward error over tolerance", report.first_backward_introducing_stage or "none"],
        ["outputs failing with no stage failing", _short(f"{case}: {name}" for case, entry in report.localisation.items()
                                                         for name in entry["unlocated_outputs"])],
        ["gradient parity: worst relative error", f"{_fmt(worst_grad)} (tol {_fmt(tolerance)}, {len(report.gradient_parity)} parameters)"],
        *_float64_rows(report),
        *_precision_rows(report),
        *([["bundle digest", report.bundle["digest"]]] if report.bundle.get("digest") else []),
        *[[f"check: {name}", _fmt(ok)] for name, ok in report.checks.items()],
        *[[f"determinism: {name}", _fmt(ok)] for name, ok in report.determinism.items()],
        *[[f"time: {stage}", f"{seconds:.1f} s"] for stage, seconds in report.timings_s.items()],
    ]


def _float64_rows(report: ParityReport) -> list[list[str]]:
    """The float64 exactness check in three lines (none without the legacy's float64 run)."""
    if report.float64 is None:
        return [["float64 exactness", "not run: the bundle holds no float64 run of the legacy"]]
    f = report.float64
    first = next((f"{case}: {stage}" for case, stage in f["first_failing_stage"].items() if stage), "none")
    return [["float64 exactness: worst relative error", f"{_fmt(f['worst'])} (bound {_fmt(f['bound'])}, "
             f"{len(f['values'])} values, {len(f['gradients'])} gradients)"],
            ["float64 exactness: first stage over its bound", first],
            ["float64 run: legacy parts substituted", _short(f["substitutes"], None)]]


def _precision_rows(report: ParityReport) -> list[list[str]]:
    """Precision parity in four lines (per case: the JSON's `precision.cases`): the worst ratios against the
    bound, the first stages over it, the float32 settings the port ran with."""
    p = report.precision
    if p is None:
        return []
    settings = p.get("settings") or {}
    return [["precision: worst port float32 error / legacy's", f"{_fmt(p['worst_ratio'])} (bound {p['bound']:g}); "
             f"reordered/repeated spread {_fmt(p['worst_spread_ratio'])}"],
            ["precision: first stage over its bound", p["first_precision_stage"] or "none"],
            ["spread: first non-deterministic stage", p["first_nondeterministic_stage"] or "none"],
            ["float32 settings the port ran with", ", ".join(f"{k} {v}" for k, v in settings.items()) or "-"]]


def _verdict(report: ParityReport) -> str:
    verdict = report.verdict or {}
    if verdict.get("mode") == "noise floor":
        return f"each value within {verdict['bound_in_floors']:g}x its measured noise floor"
    return f"fixed absolute tolerance {_fmt(verdict.get('absolute_tolerance'))}"


def _worst_ratio(comparisons: list[dict[str, Any]]) -> str:
    ratios = [(c["floor_ratio"], c["name"]) for c in comparisons if c.get("floor_ratio") is not None]
    if not ratios:
        return "-"
    value, name = max(ratios)
    return f"{value:.2f}x ({name})"


def training_rows(report: ParityReport) -> tuple[list[str], list[list[str]]]:
    training = report.training or {}
    header = ["step", "legacy fit (eager) total", "pytorch total", "abs diff",
              *[f"{o} diff" for o in training.get("objectives", [])],
              "legacy fit (traced) total", "pytorch, torch-default NAdam total"]
    rows = []
    for step in training.get("steps", []):
        rows.append([str(step["step"]), f"{step['legacy']['total']:.6f}", f"{step['pytorch']['total']:.6f}",
                     f"{step['abs_diff']['total']:.2g}", *[f"{step['abs_diff'][o]:.2g}" for o in training["objectives"]],
                     f"{step['legacy_graph_fit']['total']:.6f}", f"{step['pytorch_torch_default_nadam']['total']:.6f}"])
    return header, rows


def keras3_rows(report: ParityReport) -> list[list[str]]:
    """`--keras3`: one row per backend: versions, forward and gradient parity against the legacy."""
    rows = []
    for backend, entry in (report.keras3 or {}).get("backends", {}).items():
        if entry.get("error"):
            rows.append([backend, "-", "-", "-", "-", "-", f"did not run: {entry['error']}"])
            continue
        library = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}[backend]
        versions = f"keras {entry['versions']['keras']}, keras-hub {entry['versions']['keras_hub']}, " \
                   f"{library} {entry['versions'][library]}"
        ratio = entry.get("worst_floor_ratio")
        rows.append([backend, versions, "-" if ratio is None else f"{ratio:.2f}x",
                     entry.get("forward_problem") or entry.get("first_failing_stage") or "none",
                     _fmt(entry.get("worst_gradient_rel_err")),
                     "yes" if entry["compiled"].get("jit_compile") else "no",
                     _fmt(entry.get("forward_passed") and entry.get("gradient_parity_passed"))])
    return rows


KERAS3_HEADER = ["backend", "versions", "worst forward error / floor", "first stage over bound",
                 "eager gradient: worst rel err", "fit jit_compile (auto)", "result"]


def keras3_census_rows(report: ParityReport, limit: int | None = 3) -> list[list[str]]:
    """`--keras3`: per census column, the parameters with no gradient (None) or an all-zero one, and why."""
    rows = []
    for mode, flow in report.gradients.items():
        if not mode.startswith("keras3/"):
            continue
        causes = sorted({cause.split(":")[0] for cause in flow.get("causes", {}).values()})
        rows.append([mode, _short(flow["missing"], limit), _short(flow["zero"], limit), "; ".join(causes) or "-"])
    return rows


KERAS3_CENSUS_HEADER = ["column", "no gradient (None)", "all-zero gradient", "cause"]


def keras3_seed_rows(report: ParityReport) -> tuple[list[str], list[list[str]]]:
    """The seed's six variables (rows) in every Keras 3 column: gradient, missing or zero."""
    table = (report.keras3 or {}).get("seed_six", {})
    columns = list(table)
    names = sorted({name for statuses in table.values() for name in statuses})
    return ["parameter", *columns], [[name, *(table[c][name] for c in columns)] for name in names]


# --- terminal ------------------------------------------------------------------------------------

def _table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in header:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def print_report(report: ParityReport, console: Console | None = None) -> None:
    console = console or Console()
    console.print(f"[bold]QARAC parity report[/bold]: {report.model}")
    console.print(", ".join(f"{k} {v}" for k, v in report.versions.items()))
    console.print(_table("Forward parity (PyTorch legacy preset vs legacy Keras, eval mode)", FORWARD_HEADER, forward_rows(report)))
    console.print(_table("Stage by stage", LAYER_HEADER, layer_rows(report)))
    for case in report.stage_errors:
        console.print(_table(f"Introduced vs accumulated error per stage ({case})", STAGE_ERROR_HEADER,
                             stage_error_rows(report, case)))
    console.print(_table("Gradient flow", GRADIENT_HEADER, gradient_rows(report)))
    console.print(_table("Backward, introduced per stage (fed the legacy's input and upstream gradient)",
                         BACKWARD_HEADER, backward_rows(report)))
    for framework in report.reachability:
        header, rows = reachability_rows(report, framework)
        console.print(_table(f"Which objective reaches which parameters ({framework})", header, rows))
    console.print(_table("Deviation ledger (each option switched alone)", DEVIATION_HEADER, deviation_rows(report)))
    if report.training:
        header, rows = training_rows(report)
        console.print(_table("Training parity (legacy fit vs PyTorch legacy preset)", header, rows))
    if report.keras3:
        console.print(_table("Keras 3 (QARAC's original design) vs the legacy, padded batch", KERAS3_HEADER,
                             keras3_rows(report)))
        console.print(_table("Keras 3 gradient census", KERAS3_CENSUS_HEADER, keras3_census_rows(report)))
    console.print(_table("Summary", SUMMARY_HEADER, summary_rows(report)))
    verdict = "[green]PASSED[/green]" if report.passed else "[red]FAILED[/red]"
    console.print(f"parity {verdict} in {report.timings_s.get('total', float('nan')):.1f} s")


# --- files ---------------------------------------------------------------------------------------

def json_safe(value: Any) -> Any:
    """`value` with every non-finite float written as the string "nan", "inf" or "-inf": strict JSON
    has no NaN/inf, and a port producing them must still get its report."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def report_json(report: ParityReport) -> str:
    """The report as strict JSON (non-finite numbers as strings: `json_safe`)."""
    return json.dumps(json_safe({"schema_version": JSON_SCHEMA_VERSION, **report.to_dict()}), indent=2,
                      allow_nan=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return json_safe(value.item())
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def write_json(report: ParityReport, path: Path) -> None:
    atomic_write_text(Path(path), report_json(report))


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    escape = lambda cell: str(cell).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# The report's terms, explained once at its top (Markdown).
TERMS = {
    "legacy Keras": "the original QARAC rebuilt in tf-keras (`legacy_keras/`), failure included.",
    "legacy preset": "the PyTorch port with `QaracConfig.legacy()`: every compatibility option as the legacy had "
                     "it (pooling head without the mask, decoder head attending both ways, RoBERTa pooler kept, "
                     "cross-entropy over padding). Forward and gradient parity compare it with the legacy Keras model.",
    "default preset": "the port's corrected behaviour (`QaracConfig()`); the deviation ledger measures each "
                      "option switched alone from the legacy value to the fixed one.",
    "tf/eager": "legacy Keras gradients from a `tf.GradientTape` run eagerly.",
    "tf/graph": "the same tape step traced into a graph with `tf.function`.",
    "tf/fit": "one real Keras `fit` step (in a side process), the way the legacy trained; TensorFlow's "
              "\"Gradients do not exist\" warning is captured from it.",
    "pt/legacy, pt/default": "PyTorch gradients of the port in the legacy preset and in the default preset.",
    "keras3/<backend>/<mode>": "(`--keras3`) QARAC's original design in Keras 3 on keras-hub's RoBERTa "
                               "(`keras3_qarac/`), on the tensorflow, torch or jax backend: `eager` is the backend's "
                               "own eager differentiation, `compiled` one real Keras `fit` step.",
    "the seed's six variables": "the variables TensorFlow's warning in the seed note names as getting no gradient: "
                                "the pooler dense kernel and bias of both RoBERTa bases (dead parameters: QARAC "
                                "never uses the pooler) and the local projection of both encoder heads (used, but "
                                "the legacy's `tf.vectorized_map` loses its gradient in graph mode and `fit`).",
}


def report_markdown(report: ParityReport) -> str:
    terms = "\n".join(f"- **{term}**: {meaning}" for term, meaning in TERMS.items())
    parts = [f"# QARAC parity report\n\nModel: `{report.model}`  \nResult: **{'PASSED' if report.passed else 'FAILED'}**\n",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()) + "\n",
             "## Terms\n", terms,
             "\n## Summary\n", _markdown_table(SUMMARY_HEADER, summary_rows(report, limit=None)),
             "\n## Forward parity\n", _markdown_table(FORWARD_HEADER, forward_rows(report)),
             "\n## Stage by stage\n", _markdown_table(LAYER_HEADER, layer_rows(report)),
             "\n## Gradient flow\n", _markdown_table(GRADIENT_HEADER, gradient_rows(report, limit=None))]
    parts += ["\n## Backward error introduced per stage\n", _markdown_table(BACKWARD_HEADER, backward_rows(report))]
    for case in report.stage_errors:
        parts += [f"\n## Introduced vs accumulated error per stage ({case})\n",
                  _markdown_table(STAGE_ERROR_HEADER, stage_error_rows(report, case))]
    causes = {name: cause for flow in report.gradients.values() for name, cause in flow.get("causes", {}).items()}
    parts += ["\nWhy each missing gradient is missing:\n"] + [f"- `{name}`: {cause}" for name, cause in sorted(causes.items())]
    for framework in report.reachability:
        header, rows = reachability_rows(report, framework)
        parts += [f"\n## Reachability ({framework})\n", _markdown_table(header, rows)]
    parts += ["\n## Deviation ledger\n", _markdown_table(DEVIATION_HEADER, deviation_rows(report))]
    if report.training:
        header, rows = training_rows(report)
        parts += ["\n## Training parity\n", _markdown_table(header, rows)]
    if report.keras3:
        parts += keras3_markdown(report)
    return "\n".join(parts) + "\n"


def keras3_markdown(report: ParityReport) -> list[str]:
    """`--keras3`: the backends against the legacy, the census columns, the seed's six, each backend's stages."""
    header, rows = keras3_seed_rows(report)
    parts = ["\n## Keras 3: QARAC's original design on three backends\n",
             "Each backend ran in its own process (`keras3_qarac.runner`) with the legacy's weights, on the padded "
             "batch; forward values are judged as the port's, against the same noise floors.\n",
             _markdown_table(KERAS3_HEADER, keras3_rows(report)),
             "\n### Which parameters get no gradient\n", _markdown_table(KERAS3_CENSUS_HEADER,
                                                                        keras3_census_rows(report, limit=None)),
             *[f"\n{backend}: {note}." for backend, note in report.keras3.get("notes", {}).items()],
             "\n### The seed's six variables\n", _markdown_table(header, rows)]
    for backend, entry in report.keras3["backends"].items():
        if entry.get("stages"):
            stage_rows = [[c["name"], _fmt(c["max_abs_err"]), _fmt(c["noise_floor"]),
                           "-" if c["floor_ratio"] is None else f"{c['floor_ratio']:.2f}x", _fmt(c["passed"])]
                          for c in entry["forward"] + entry["stages"]]
            parts += [f"\n### keras3/{backend}: outputs and stages\n",
                      _markdown_table(["value", "max abs err", "noise floor", "error / floor", "result"], stage_rows)]
    return parts


def write_markdown(report: ParityReport, path: Path) -> None:
    atomic_write_text(Path(path), report_markdown(report))
