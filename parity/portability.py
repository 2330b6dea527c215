"""Portability on one machine: the shipped bundle checked, and recorded again, under capped
instruction sets and thread counts, each read back from the libraries that ran.

A reference bundle is recorded on one CPU and checked on every other. Another CPU runs other
kernels (AVX-512 or AVX2 or SSE, oneDNN or Eigen, another blocking of the sums), and so gives
other float32 rounding. One machine can show most of that spread by capping what its libraries
may use. Each setting below is an environment a fresh process starts with; the process reads
back what its libraries actually did (`readback`), checks the bundle (the port's verdict) and
records the legacy again, and judges the new recording against the bundle by the shared rule
(`parity.reproduction`).

    python -m parity.portability reference/tiny --setting torch-scalar --json out.json

`run_settings` runs them all: every setting's read-back is taken first (8 s each), and a setting
whose read-back equals the machine's as-is one, or an earlier setting's, is not run again (it
would run the same kernels: its result names the one it equals in `same_as`). The others run one
after the other: two at once took as long as two in turn on the 2-core AMD EPYC (248 s, against
126 s for one alone), each already keeping 1.3 cores busy with its `fit` probe beside it.

What the installed libraries honour, read back on an AMD EPYC (AVX2) with torch 2.13.0 and
TensorFlow 2.21 (`parity.portability.readback`):

- `ATEN_CPU_CAPABILITY=default`: torch's own kernels drop from AVX2 to scalar code
  (`torch.backends.cpu.get_cpu_capability()` reads "DEFAULT").
- `ONEDNN_MAX_CPU_ISA=SSE41`: oneDNN (torch's, and TensorFlow's where its oneDNN ops are on)
  reports "isa:Intel SSE4.1" in its verbose log instead of AVX2.
- `TF_ENABLE_ONEDNN_OPTS`: TensorFlow turns its oneDNN ops on by default only on CPUs with
  AVX-512 VNNI/BF16 or AMX (as on the Intel Xeon that recorded the test fixture), off elsewhere;
  `1` turns them on here, and `IsMklEnabled()` reads it back.
- `OMP_NUM_THREADS=1` sets torch's thread count; TensorFlow ignores it and reads
  `TF_NUM_INTRAOP_THREADS`/`TF_NUM_INTEROP_THREADS` instead (fewer OS threads after a matmul).
- `MKL_ENABLE_INSTRUCTIONS`: MKL's verbose banner names no instruction set on this AMD CPU
  with or without it (MKL runs its generic path on non-Intel processors): not observable here,
  so not one of the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from parity.reproduction import TRIANGLE

# The machine's own environment, nothing added: the name a read-back of it is reported under.
AS_IS = "as is"

# Each setting: the environment it adds to a fresh process.
SETTINGS: dict[str, dict[str, str]] = {
    "torch-scalar": {"ATEN_CPU_CAPABILITY": "default"},
    "onednn-sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "tf-onednn-on": {"TF_ENABLE_ONEDNN_OPTS": "1"},
    "tf-onednn-off": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "one-thread": {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"},
    "all-capped": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "TF_ENABLE_ONEDNN_OPTS": "1",
                   "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"},
}

_PROBE = """
import json, os, torch
out = {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads()}
with torch.backends.mkldnn.verbose(1):
    torch.nn.functional.conv1d(torch.randn(1, 4, 16), torch.randn(4, 4, 3))
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port
out["tf_onednn_ops"] = bool(_pywrap_util_port.IsMklEnabled())
x = tf.random.normal((128, 128))
for _ in range(3):
    x = tf.nn.relu(tf.matmul(x, x) / 128.0)
out["os_threads_after_tf_matmul"] = len(os.listdir("/proc/self/task"))
print("READBACK " + json.dumps(out), flush=True)
"""


def readback(env: dict[str, str] | None = None) -> dict[str, Any]:
    """What torch, oneDNN and TensorFlow actually ran with, read in a fresh process with `env` added.

    Returns: torch_cpu_capability, torch_threads, tf_onednn_ops, os_threads_after_tf_matmul and
    onednn_isa (every ISA oneDNN's verbose log named, torch's and TensorFlow's).
    """
    full = {**os.environ, **(env or {}), "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", _PROBE], env=full, capture_output=True, text=True, timeout=300)
    lines = result.stdout.splitlines()
    found = [line for line in lines if line.startswith("READBACK ")]
    if result.returncode != 0 or not found:
        raise RuntimeError(f"the read-back probe failed (exit {result.returncode}): {result.stderr.strip()[-300:]}")
    values = json.loads(found[-1][len("READBACK "):])
    values["onednn_isa"] = sorted({line.split("isa:", 1)[1].split(",")[0].strip() for line in lines if "isa:" in line})
    return values


@dataclass
class PortabilityResult:
    """One setting's run: what ran, the port's verdict on the bundle, the new recording against it.

    Attributes:
        setting: the name in `SETTINGS` (or "as is").
        environment: the variables added.
        readback: `readback()` under them.
        check_passed / check_failed: `check`'s verdict on the bundle and the checks that failed.
        check_worst_floor_ratio: the worst forward error of the port, in floor units.
        reproduction: `parity.reproduction.Reproduction.to_dict()` of the new recording.
        reproduction_worst_ratio: its worst value judged through the float64 runs, in units of
            its scale (the two recordings' float32 errors, `parity.reproduction`; bound 1).
        same_as: where this setting's read-back equals that of `AS_IS` or of an earlier setting,
            that name: the same kernels, so nothing else was run (the check fields stay empty).
    """

    setting: str
    environment: dict[str, str]
    readback: dict[str, Any] = field(default_factory=dict)
    check_passed: bool = False
    check_failed: list[str] = field(default_factory=list)
    check_worst_floor_ratio: float | None = None
    reproduction: dict[str, Any] = field(default_factory=dict)
    reproduction_worst_ratio: float | None = None
    same_as: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_and_reproduce(bundle_dir: Path, model_dir: Path | None = None) -> tuple[dict[str, Any], Any]:
    """In this process: `check` of the bundle and a new recording judged against it.

    Returns: (the check report as a dict, the `Reproduction`).
    """
    from parity.bundle import read_bundle
    from parity.check import check
    from parity.legacy.record import record_legacy
    from parity.reference import check_bundle_model, from_bundle, to_bundle
    from parity.reproduction import compare_bundles
    from qarac.presets import tiny_model_dir

    reference = read_bundle(bundle_dir)
    check_bundle_model(reference)
    report = check(from_bundle(reference)).to_dict()
    settings = (reference.results.get("training") or {}).get("settings") or {}
    fresh = to_bundle(record_legacy(model_dir or tiny_model_dir(), reference.meta["seed"],
                                    reference.meta["batch_size"], settings.get("steps", 0)))
    return report, compare_bundles(reference, fresh)


def worst_forward_floor_ratio(report: dict[str, Any]) -> float | None:
    ratios = [c["floor_ratio"] for c in [*report["forward"], *report["layers"]] if c.get("floor_ratio") is not None]
    return max(ratios, default=None)


def run_setting(setting: str, bundle_dir: Path, out: Path, timeout: float = 900,
                known_readback: dict[str, Any] | None = None) -> PortabilityResult:
    """Run `check_and_reproduce` in a fresh process under `SETTINGS[setting]` and read its result.

    Args:
        known_readback: `readback(SETTINGS[setting])`, where the caller took it already.
    """
    env = {**os.environ, **SETTINGS[setting]}
    command = [sys.executable, "-m", "parity.portability", str(bundle_dir), "--setting", setting, "--json", str(out)]
    if known_readback is not None:
        command += ["--readback", json.dumps(known_readback)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if not out.is_file():
        raise RuntimeError(f"setting {setting}: no result (exit {result.returncode}): {result.stderr.strip()[-500:]}")
    data = json.loads(out.read_text(encoding="utf-8"))
    return PortabilityResult(**data)


@dataclass
class PortabilityPass:
    """Every setting's result, and the read-back of the machine as it is that they were compared with."""

    as_is_readback: dict[str, Any]
    results: dict[str, PortabilityResult]


def first_equal(readbacks: dict[str, dict[str, Any]]) -> dict[str, str]:
    """For each name whose read-back equals an earlier one's (in the dict's order), that earlier name.

    Args:
        readbacks: name -> `readback()`, `AS_IS` first.
    """
    same: dict[str, str] = {}
    for index, (name, values) in enumerate(readbacks.items()):
        earlier = [other for other in list(readbacks)[:index] if other not in same and readbacks[other] == values]
        if earlier:
            same[name] = earlier[0]
    return same


def run_settings(settings: list[str], bundle_dir: Path, out_dir: Path, timeout: float = 900,
                 jobs: int = 3) -> PortabilityPass:
    """Every setting of `settings`, its result written to `out_dir/<setting>.json`.

    The read-backs come first; a setting reading back as `AS_IS` or an earlier setting does is not
    run (`same_as`); each other one runs in its own fresh process. Read-backs and settings run `jobs`
    at once: what each reads back or computes depends on its environment only (its thread counts
    are set, or fixed by the core count; a read-back counts its own process's threads), not on
    what runs beside it.
    """
    from qarac.checkpoint import atomic_write_text

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        environments = {AS_IS: None, **{setting: SETTINGS[setting] for setting in settings}}
        readbacks = dict(zip(environments, pool.map(readback, environments.values())))
        same = first_equal(readbacks)
        results = {}
        for setting in settings:
            if setting in same:
                results[setting] = PortabilityResult(setting, SETTINGS[setting], readbacks[setting],
                                                     same_as=same[setting])
                atomic_write_text(out_dir / f"{setting}.json", json.dumps(results[setting].to_dict(), indent=1) + "\n")
        to_run = [setting for setting in settings if setting not in same]
        ran = pool.map(lambda setting: run_setting(setting, bundle_dir, out_dir / f"{setting}.json", timeout,
                                                   readbacks[setting]), to_run)
        results.update(zip(to_run, ran))
    return PortabilityPass(readbacks[AS_IS], {setting: results[setting] for setting in settings})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parity.portability", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="the reference bundle (e.g. reference/tiny)")
    parser.add_argument("--setting", default=AS_IS, help="the name this environment is reported under")
    parser.add_argument("--model", type=Path, default=None, help="the model directory to record (default: the embedded tiny)")
    parser.add_argument("--json", type=Path, required=True, help="write the result here")
    parser.add_argument("--readback", type=json.loads, default=None,
                        help="the read-back (JSON) already taken under this environment (run_settings takes "
                             "every setting's first); default: read it back now")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    result = PortabilityResult(args.setting, SETTINGS.get(args.setting, {}), args.readback or readback())
    report, reproduction = check_and_reproduce(args.bundle, args.model)
    result.check_passed = bool(report["passed"])
    result.check_failed = [name for name, ok in report["checks"].items() if not ok]
    result.check_worst_floor_ratio = worst_forward_floor_ratio(report)
    result.reproduction = reproduction.to_dict()
    worst = reproduction.worst(TRIANGLE)
    result.reproduction_worst_ratio = worst.ratio if worst else None
    from qarac.checkpoint import atomic_write_text

    atomic_write_text(args.json, json.dumps(result.to_dict(), indent=1) + "\n")
    print(f"{args.setting}: check {'PASSED' if result.check_passed else 'FAILED'} "
          f"(worst {result.check_worst_floor_ratio:.2f} floors), reproduction "
          f"{'PASSED' if reproduction.passed else 'FAILED'} (worst {result.reproduction_worst_ratio:.2f} of its scale)")
    return 0 if result.check_passed and reproduction.passed else 1


if __name__ == "__main__":
    sys.exit(main())
