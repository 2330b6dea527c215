"""Keras 3 as a third column: QARAC's original design on Keras 3's TensorFlow, PyTorch and JAX
backends, against the legacy, in the live run's report.

Keras fixes its backend at import, so each backend runs `keras3_qarac.runner` in its own
process, all started at once; their results come back as data (safetensors + JSON). From
them, and the live run's legacy recording and noise floors, this module computes:

- forward parity of each backend's padded-batch forward against the legacy's, output by
  output and stage by stage, judged exactly as the port is (`parity.forward.compare_captures`,
  the port's noise floors, the run's `parity.tolerance.Tolerance`), the first stage over its bound named;
- gradient parity of each backend's eager gradients against the legacy's eager ones
  (`parity.gradient_parity.compare_gradients`);
- the census columns `keras3/<backend>/eager` and `keras3/<backend>/compiled`
  (`parity.gradients.census`), each missing *or all-zero* gradient with its cause: JAX
  differentiates functionally and returns zeros, never None, for a parameter no loss reaches.

`add_keras3(report, run)` adds the section (`report.keras3`), the columns and the checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from parity import gradient_parity, gradients
from parity.comparator import SEED_MISSING
from parity.forward import compare_captures
from parity.results import LegacyRun, ParityReport
from parity.stages import Capture, sites
from parity.tolerance import Tolerance

BACKENDS = ("tensorflow", "torch", "jax")
MODES = ("eager", "compiled")
# One runner on the tiny model takes well under a minute (README "Would Keras 3 have been
# enough?"); roberta-base shapes take longer, and a hung backend must not hang the run.
RUNNER_TIMEOUT_S = 900
JAX_ZERO = ("JAX differentiates a function of all trainable values at once: a parameter no loss "
            "reaches gets a gradient of zeros, never None")


def column(backend: str, mode: str) -> str:
    """The census column of a backend and mode: `keras3/<backend>/<mode>`."""
    return f"keras3/{backend}/{mode}"


@dataclass
class BackendRun:
    """One runner's results, as data.

    Attributes:
        backend: `tensorflow`, `torch` or `jax`.
        results: the runner's JSON (versions, stage order, per mode `missing`, `jit_compile`, `warning`),
            or `error` and `traceback`.
        arrays: `output/<name>`, `stage/<site>#<index>`, `grad/<mode>/<port name>`.
        wall_s: the process' wall time.
    """

    backend: str
    results: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def error(self) -> str | None:
        return self.results.get("error")

    def gradients(self, mode: str, parameters) -> dict[str, np.ndarray | None]:
        """Port name -> gradient in `mode` (None: missing)."""
        return {name: self.arrays.get(f"grad/{mode}/{name}") for name in parameters}

    def capture(self, num_layers: int) -> Capture:
        """The forward as a `Capture`, each stage named as the harness names it."""
        calls = sites(num_layers)
        capture = Capture(outputs={k[len("output/"):]: v for k, v in self.arrays.items() if k.startswith("output/")})
        for key in self.results["order"]:
            site, index = key[len("stage/"):].rsplit("#", 1)
            name = f"{site} ({calls[site][int(index)]})"
            capture.stage_outputs[name] = self.arrays[key]
            capture.stage_inputs[name] = None
            capture.order.append(name)
        return capture


def write_work(work: Path, run: LegacyRun, nested_tf_function: bool = True) -> None:
    """The runners' inputs: the weights the legacy ran with, the padded batch and its targets.

    Args:
        nested_tf_function: TensorFlow backend: keep the original's nested `@tf.function`s in the
            pooling heads (False: the plain Keras 3 translation, `keras3_qarac.layers`).
    """
    from safetensors.numpy import save_file

    arrays = {f"weights/{name}": np.ascontiguousarray(run.weights[name]) for name in run.parameters}
    for name, tokens in run.inputs["padded"].items():
        arrays[f"inputs/{name}/input_ids"] = tokens.input_ids.numpy().astype(np.int32)
        arrays[f"inputs/{name}/attention_mask"] = tokens.attention_mask.numpy().astype(np.int32)
    for name in ("encode_decode", "reasoning"):
        arrays[f"targets/{name}"] = run.targets[name].input_ids.numpy().astype(np.int32)
    arrays["targets/consistency"] = np.asarray(run.targets["consistency"], dtype=np.float32)
    save_file(arrays, str(work / "inputs.safetensors"))
    meta = {"model_dir": str(run.meta.get("model_files") or run.meta["model"]), "seed": int(run.meta["seed"]),
            "hidden_size": int(run.meta["model_config"]["hidden_size"]), "parameters": list(run.parameters),
            "nested_tf_function": bool(nested_tf_function)}
    (work / "inputs.json").write_text(json.dumps(meta))


def runner_env(backend: str) -> dict[str, str]:
    """The environment of a runner: its backend; the legacy's Keras 2 switch and hub access off."""
    env = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    env.update({"KERAS_BACKEND": backend, "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
                "JAX_PLATFORMS": "cpu"})
    return env


def run_backends(work: Path, backends=BACKENDS, timeout_s: float = RUNNER_TIMEOUT_S) -> dict[str, BackendRun]:
    """Start one runner per backend (all at once) on the inputs in `work`; wait for each."""
    from safetensors.numpy import load_file

    processes, started = {}, {}
    for backend in backends:
        log = open(work / f"{backend}.log", "w")
        started[backend] = time.perf_counter()
        processes[backend] = subprocess.Popen([sys.executable, "-m", "keras3_qarac.runner", "--work", str(work)],
                                              env=runner_env(backend), stdout=log, stderr=subprocess.STDOUT)
        log.close()
    runs, walls = {}, {}
    deadline = time.perf_counter() + timeout_s
    while len(walls) < len(processes):  # polled, so that each runner's wall time is its own
        for backend, process in processes.items():
            if backend not in walls and process.poll() is not None:
                walls[backend] = round(time.perf_counter() - started[backend], 3)
        if time.perf_counter() > deadline:
            for backend, process in processes.items():
                if backend not in walls:
                    process.kill()
                    process.wait()
                    walls[backend] = round(time.perf_counter() - started[backend], 3)
        time.sleep(0.1)
    for backend, process in processes.items():
        wall = walls[backend]
        path = work / backend / "results.json"
        if not path.is_file():
            log = (work / f"{backend}.log").read_text(errors="replace").strip().splitlines()
            reason = "timed out" if process.returncode in (-9, 137) else f"exited {process.returncode}"
            runs[backend] = BackendRun(backend, {"error": f"the runner {reason} without results; last output: "
                                                          f"{' | '.join(log[-3:]) or 'none'}"}, wall_s=wall)
            continue
        results = json.loads(path.read_text())
        arrays = {}
        if "error" not in results:
            arrays = load_file(str(work / backend / "results.safetensors"))
        runs[backend] = BackendRun(backend, results, arrays, wall)
    return runs


def seed_six_status(flows: Mapping[str, gradients.GradientFlow]) -> dict[str, dict[str, str]]:
    """The seed's six variables: column -> parameter -> `gradient`, `missing` or `zero`."""
    table = {}
    for key, flow in flows.items():
        table[key] = {name: "missing" if name in flow.missing else "zero" if name in flow.zero else "gradient"
                      for name in sorted(SEED_MISSING)}
    return table


def attribute(flow: gradients.GradientFlow, references: list[Mapping[str, np.ndarray | None]]) -> None:
    """Causes of every missing *and* all-zero gradient (`parity.gradients.attribute_causes` covers missing ones)."""
    gradients.attribute_causes(flow, references)
    for name in flow.zero:
        reached = any(reference.get(name) is not None and np.any(reference[name]) for reference in references)
        flow.causes[name] = gradients.LOST if reached else gradients.DEAD


def _forward_entry(case) -> dict[str, Any]:
    """A backend's forward comparison (`parity.forward.CaseResult`) as report fields."""
    compared = case.outputs + case.stages
    return {"forward": [c.to_dict() for c in case.outputs], "stages": [c.to_dict() for c in case.stages],
            "first_failing_stage": case.first_failure, "unlocated_outputs": case.unlocated,
            "forward_passed": all(c.passed for c in compared),
            "worst_floor_ratio": max((c.floor_ratio for c in compared if c.floor_ratio is not None), default=None)}


def keras3_section(report: ParityReport, run: LegacyRun, runs: Mapping[str, BackendRun],
                   model_config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, gradients.GradientFlow], dict[str, bool]]:
    """Compare each backend's results with the legacy recording.

    Returns:
        the report section, the census columns, and the checks.
    """
    rule = Tolerance.from_verdict(report.verdict or {}, model_config)  # the port's run's rule
    floors = (report.noise_floors.get("padded") or {}).get("floor")
    if floors is None:
        rule = rule.without_floors()
    bound, tolerance = rule.bound_in_floors, rule.absolute
    num_layers = int(model_config["num_hidden_layers"])
    parameters = list(run.parameters)
    section: dict[str, Any] = {"backends": {}, "modes": list(MODES), "verdict": {"bound_in_floors": bound,
                                                                                "absolute_tolerance": tolerance}}
    flows: dict[str, gradients.GradientFlow] = {}
    eager_references = [run.gradients["tf/eager"]]
    ok = [backend_run for backend_run in runs.values() if backend_run.error is None]
    eager_references += [backend_run.gradients("eager", parameters) for backend_run in ok]
    for backend, backend_run in runs.items():
        entry: dict[str, Any] = {"error": backend_run.error, "wall_s": backend_run.wall_s}
        section["backends"][backend] = entry
        if backend_run.error is not None:
            entry["traceback"] = backend_run.results.get("traceback")
            continue
        results = backend_run.results
        entry.update({"versions": results["versions"], "timings_s": results["timings_s"],
                      "nested_tf_function": results["nested_tf_function"],
                      "compiled": {k: v for k, v in results["modes"]["compiled"].items() if k != "missing"}})
        try:
            case = compare_captures(backend_run.capture(num_layers), run.captures["padded"], run.inputs["padded"],
                                    f"keras3/{backend}", tolerance, floors if bound is not None else None, bound)
            entry.update(_forward_entry(case))
        except (IndexError, KeyError, ValueError) as error:  # a forward that ran other stages than the legacy's
            entry.update({"forward_problem": f"{type(error).__name__}: {error}", "forward_passed": False,
                          "forward": [], "stages": [], "first_failing_stage": None, "unlocated_outputs": []})
        eager, legacy = backend_run.gradients("eager", parameters), run.gradients["tf/eager"]
        # JAX, and Keras' torch backend, return zeros where the legacy returns None: a parameter no loss
        # reaches. The census attributes its cause; only a real one-sided gradient fails here.
        declared = {name: "all zero on this backend, None in the legacy: reached by no loss (see the census)"
                    for name, value in eager.items()
                    if value is not None and legacy.get(name) is None and not np.any(value)}
        compared = gradient_parity.compare_gradients(eager, legacy, declared=declared)
        entry["gradient_parity"] = [c.to_dict() for c in compared]
        entry["gradient_parity_passed"] = bool(compared) and all(c.passed for c in compared)
        entry["worst_gradient_rel_err"] = max((c.max_rel_err for c in compared), default=None)
        for mode in MODES:
            flow = gradients.census(backend_run.gradients(mode, parameters), parameters)
            attribute(flow, eager_references)
            flows[column(backend, mode)] = flow
    section["seed_six"] = seed_six_status(flows)
    section["notes"] = {"jax": JAX_ZERO}
    entries = [section["backends"][b] for b in runs]
    checks = {
        "keras3_runs": bool(runs) and all(e["error"] is None for e in entries),
        "keras3_forward": bool(ok) and all(e.get("forward_passed", False) for e in entries),
        "keras3_localised": all(not e.get("unlocated_outputs") for e in entries),
        "keras3_gradient_parity": bool(ok) and all(e.get("gradient_parity_passed", False) for e in entries),
        "keras3_census_complete": all(column(b, m) in flows and flows[column(b, m)].complete
                                      for b in runs for m in MODES),
    }
    return section, flows, checks


def add_keras3(report: ParityReport, run: LegacyRun, backends=BACKENDS,
               progress: Callable[[str], None] = lambda step: None) -> None:
    """Run every backend on the live run's recording and add the section, the census columns and the checks."""
    start = time.perf_counter()
    progress(f"keras3: {', '.join(backends)} (one process each)")
    with tempfile.TemporaryDirectory(prefix="qarac-keras3-") as scratch:
        work = Path(scratch)
        write_work(work, run)
        runs = run_backends(work, backends)
    section, flows, checks = keras3_section(report, run, runs, run.meta["model_config"])
    report.keras3 = section
    report.gradients.update({key: flow.to_dict() for key, flow in flows.items()})
    report.checks.update(checks)
    report.passed = all(report.checks.values())
    report.timings_s["keras3"] = round(time.perf_counter() - start, 3)
