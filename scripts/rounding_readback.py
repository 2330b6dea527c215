"""What the rounding-change pass (`make test-rounding`) really changed on this machine.

Run as is and again under the pass's settings, each in a fresh process: torch's CPU capability,
its thread count, the instruction sets oneDNN's verbose log names, and a fingerprint of a few
float32 kernels the port runs (an MKL product at the padded vocabulary's odd shapes, torch's own
softmax, layer norm and sum, a oneDNN convolution). A setting that honours nothing here would
rerun the suite on the same kernels and prove nothing, so the pass stops when no kernel's
fingerprint moved.

    python scripts/rounding_readback.py MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default ...
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

_PROBE = r"""
import hashlib, json, torch
generator = torch.Generator().manual_seed(0)
def draw(*shape):
    return torch.randn(*shape, generator=generator, dtype=torch.float64).float()
def digest(tensor):
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()[:16]
x, weight, scores, rows = draw(48, 32), draw(32, 576), draw(64, 515), draw(100003)
fingerprints = {
    "mkl_product": digest(x @ weight),
    "softmax": digest(torch.softmax(scores, dim=-1)),
    "layer_norm": digest(torch.nn.functional.layer_norm(scores, (515,))),
    "sum": digest(rows.sum().reshape(1)),
}
with torch.backends.mkldnn.verbose(1):
    fingerprints["onednn_conv"] = digest(torch.nn.functional.conv1d(draw(1, 4, 64), draw(4, 4, 3)))
print("READBACK " + json.dumps({"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                                "torch_threads": torch.get_num_threads(), "fingerprints": fingerprints}), flush=True)
"""


def readback(settings: dict[str, str]) -> dict:
    """One fresh process under `settings` (added to this environment): what its libraries ran."""
    environment = {**os.environ, **settings}
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=environment, check=True)
    lines = done.stdout.splitlines()
    values = json.loads(next(line for line in lines if line.startswith("READBACK "))[len("READBACK "):])
    values["onednn_isa"] = sorted({line.split("isa:", 1)[1].split(",")[0].strip() for line in lines if "isa:" in line})
    return values


def moved_kernels(as_is: dict, changed: dict) -> list[str]:
    """The kernels whose float32 results differ between the two read-backs."""
    return sorted(name for name, value in changed["fingerprints"].items() if value != as_is["fingerprints"][name])


def parse_settings(words: list[str]) -> dict[str, str]:
    settings = dict(word.split("=", 1) for word in words if "=" in word)
    malformed = [word for word in words if "=" not in word]
    if malformed or not settings:
        raise SystemExit(f"rounding_readback: settings must be NAME=VALUE words, got {malformed or 'none'}")
    return settings


def main(argv: list[str]) -> int:
    settings = parse_settings(argv)
    as_is, changed = readback({}), readback(settings)
    moved = moved_kernels(as_is, changed)
    for name, values in (("as is", as_is), (" ".join(argv), changed)):
        print(f"{name}: torch {values['torch_cpu_capability']}, {values['torch_threads']} thread(s), "
              f"oneDNN {', '.join(values['onednn_isa']) or 'not named'}")
    print(f"kernels rounding differently under the settings: {', '.join(moved) or 'none'}")
    if not moved:
        print("rounding_readback: the settings changed no kernel's float32 result on this machine", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
