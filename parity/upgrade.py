"""Complete an older reference bundle: the legacy's float64 run of its weights and batches, added.

    python -m parity.upgrade OLD --out NEW [--model DIR]

A schema-1 bundle holds no float64 run of the legacy, so it cannot be `check`ed: every noise floor
holds the legacy's own float32 error, measured against its float64 run, and a floor must come from
the reference, never from the port under test. A float64 run is the same on every x86 CPU to
round-off (two float64 libraries differ by ~1e-15 of a value; a float32 ulp is 6e-8 of it), so the
legacy run later, on any machine, in float64, on exactly the bundle's weights and batches, and the
sharpened case on the bundle's own version of that weight set (`parity.sharp`), gives the run the
recording machine would have given. Nothing the bundle recorded is changed; the new bundle is of the
current schema, and its manifest says what was added, where and from what (`ADDED_KEY`).

Before writing, every recorded float32 capture is judged against the new float64 run by the shared
rule (its own magnitude, `parity.agreement.RELATIVE_BOUND`): a legacy that computes something else
than the recording (other code, other weights) is refused there, not left to widen the floors.

Needs the `legacy` extra (TensorFlow). Exit status 0, or 2 with a one-line error; NEW is written
atomically and never over an existing path (OLD is never touched).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parity.agreement import Agreement, judge, magnitude_scale
from parity.bundle import MANIFEST_NAME, OLDER_SCHEMAS, SCHEMA_VERSION, Bundle, BundleError, read_bundle, write_bundle
from parity.host import cpu_model
from parity.logs import require_tensorflow, silence_library_logs
from parity.sharp import VERSION_KEY, version_of_bundle

# The manifest field that says the float64 run was added after the recording, by whom and where.
ADDED_KEY = "float64_added"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m parity.upgrade", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help=f"a bundle of an older schema ({sorted(OLDER_SCHEMAS)})")
    parser.add_argument("--out", type=Path, required=True, help="the bundle to write (must not exist)")
    parser.add_argument("--model", type=Path, default=None,
                        help="HF RoBERTa directory the legacy is built from (default: the embedded tiny "
                             "RoBERTa); must match the bundle's architecture and vocabulary. Its weights "
                             "are replaced by the bundle's")
    return parser.parse_args(argv)


def commit() -> str:
    """The qarac checkout's git commit (with `+dirty` for uncommitted changes), or "unknown"."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def read_old(path: Path, out: Path) -> tuple[Bundle, int]:
    """The bundle to upgrade and its sharpened-set version, every file checked; `out` free.

    Raises:
        BundleError: `out` exists, the bundle is unreadable, of the current schema already, or names
            an unknown sharpened set.
    """
    if out.exists() or out.is_symlink():
        raise BundleError(f"--out {out} already exists; name a new directory (the bundle read is never replaced)")
    bundle = read_bundle(path, schemas=(*OLDER_SCHEMAS, SCHEMA_VERSION))
    if bundle.schema_version == SCHEMA_VERSION:
        raise BundleError(f"bundle {path} is of schema {SCHEMA_VERSION} already: nothing to add")
    try:
        return bundle, version_of_bundle(bundle.meta, bundle.schema_version)
    except ValueError as error:
        raise BundleError(f"bundle {path}: {error}") from None


def check_model(bundle: Bundle, model_dir: Path) -> None:
    """`model_dir` builds the architecture and vocabulary the bundle was recorded for."""
    from parity.bundle import check_same_model
    from parity.inputs import tokenizer_for
    from qarac import QaracConfig
    from qarac.checkpoint import read_roberta_config

    architecture = QaracConfig.from_roberta_config(read_roberta_config(model_dir))
    check_same_model(bundle, dict(architecture.base), tokenizer_for(model_dir, architecture).get_vocab())


def legacy_with_weights(bundle: Bundle, model_dir: Path) -> tuple[Any, Any]:
    """The port's legacy preset holding exactly the bundle's weights, and the weight map to the legacy.

    Raises:
        BundleError: the bundle's weights are not exactly the legacy preset's parameters (names, shapes).
    """
    from parity.legacy.record import build_legacy_pair
    from parity.memory import release_memory

    tf_model, pt_legacy, weight_map = build_legacy_pair(model_dir, int(bundle.meta["seed"]))
    del tf_model  # only its variable names were needed (the weight map); the float64 one is built next
    release_memory()
    state = {name: torch.from_numpy(np.array(value)) for name, value in bundle.group("weights").items()}
    try:
        pt_legacy.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:300]
        raise BundleError(f"bundle {bundle.directory}: its weights are not the legacy preset's parameters: {detail}") from None
    return pt_legacy, weight_map


def recording_against_float64(bundle: Bundle, added: Bundle) -> list[Agreement]:
    """Every recorded float32 capture judged against the float64 run of the same value (shared rule)."""
    judged = []
    for name in sorted(added.arrays):
        if name.startswith("legacy64/"):
            exact = added.arrays[name]
            recorded = bundle.array("legacy/" + name[len("legacy64/"):]).astype(exact.dtype)  # float32: exact in float64
            judged.append(judge(name[len("legacy64/"):], exact, recorded, magnitude_scale(exact)))
    return judged


def upgraded(bundle: Bundle, added: Bundle, float64: dict[str, Any], sharpened_set: int, source: Path) -> Bundle:
    """`bundle` with the float64 run `added` (arrays) and `float64` (its JSON result), of the current schema."""
    from parity.noise import LEGACY_VARIANTS
    from parity.legacy.record import legacy_versions
    from parity.reference import NOISE_FLOORS_VERSION

    results = dict(bundle.results)
    results["float64"] = float64
    # The legacy's recorded reordering noise is kept as it was measured; its float32 error against the
    # float64 run (the variant version 2 adds) is read from `legacy64/` at check time.
    results["noise_floors"] = {"schema_version": NOISE_FLOORS_VERSION, "variants": sorted(LEGACY_VARIANTS),
                               "legacy": bundle.results["noise_floors"]["legacy"]}
    meta = {**bundle.meta, VERSION_KEY: sharpened_set, ADDED_KEY: {
        "by": "python -m parity.upgrade", "from_schema": bundle.schema_version, "source": str(source),
        "source_manifest_sha256": hashlib.sha256((source / MANIFEST_NAME).read_bytes()).hexdigest(),
        "cpu": cpu_model(), "commit": commit(), "legacy_versions": legacy_versions(),
        "date": time.strftime("%Y-%m-%d", time.gmtime())}}
    return Bundle(arrays={**bundle.arrays, **added.arrays}, descriptions={**bundle.descriptions, **added.descriptions},
                  results=results, meta=meta, model_dir=bundle.model_dir)


def upgrade(path: Path, out: Path, model_dir: Path | None = None) -> tuple[Path, list[Agreement]]:
    """Read the older bundle at `path`, run the legacy's float64 pass on it, write the result at `out`.

    Returns:
        (out, every recorded float32 capture judged against the float64 run).

    Raises:
        BundleError: see `read_old`, `check_model`, `legacy_with_weights`; or a recorded capture that the
            float64 run of the legacy here does not reproduce within float32 error (nothing is written).
    """
    from parity.legacy.float64 import record_float64
    from parity.reference import add_float64, read_batches

    bundle, sharpened_set = read_old(path, out)
    if model_dir is None:
        from qarac.presets import tiny_model_dir

        model_dir = tiny_model_dir()
    check_model(bundle, model_dir)
    pt_legacy, weight_map = legacy_with_weights(bundle, model_dir)
    inputs, targets = read_batches(bundle)
    run = record_float64(model_dir, int(bundle.meta["seed"]), pt_legacy, weight_map, inputs, targets, sharpened_set)
    added = Bundle()
    result = add_float64(added, run)
    judged = recording_against_float64(bundle, added)
    if failed := [a for a in judged if not a.passed]:
        worst = max(failed, key=lambda a: a.ratio)
        how = worst.problem or f"by {worst.ratio:.3g} of its magnitude (bound {worst.bound:g})"
        raise BundleError(f"the legacy here does not compute what bundle {path} recorded: {worst.name} differs from "
                          f"its float64 run {how}; {len(failed)} of {len(judged)} values: other code or weights "
                          "than the recording's")
    write_bundle(upgraded(bundle, added, result, sharpened_set, path), out)
    return out, judged


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        read_old(args.bundle, args.out)  # bad input refused before TensorFlow starts
        require_tensorflow("the upgrade runs the legacy in float64 and needs")
        silence_library_logs()
        out, judged = upgrade(args.bundle, args.out, args.model)
    except (BundleError, ValueError, OSError) as error:
        print(f"parity.upgrade: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    worst = max(judged, key=lambda a: a.ratio)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"parity.upgrade: wrote {out} ({size / 2**20:.1f} MiB): float64 run of {len(judged)} captured values added "
          f"(recording within {worst.ratio:.2g} of its magnitude, {worst.name}) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
