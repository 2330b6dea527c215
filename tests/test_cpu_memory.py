"""`qarac.cpu_memory`: after `keep_freed_memory`, blocks a step frees are reused without new page
faults; `qarac train` on CPU sets it."""

from __future__ import annotations

import subprocess
import sys

import pytest

import qarac.train as train_module
from training_helpers import small_corpus, subprocess_env, tiny_train_config

# Three 8 MiB activations allocated, written and freed, four times, as a step's are. Prints the
# minor page faults of the last two rounds (the first rounds warm the allocator up either way).
ROUNDS = """
import resource, sys, torch
from qarac.cpu_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.empty(2 ** 21).fill_(1.0) for _ in range(3)]  # 3 x 8 MiB, every page written
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[2:]))
"""
# 2 x 3 x 8 MiB = 12 288 pages of 4 KiB: faulting in every block again shows as thousands.
PAGES = 2 * 3 * 2 ** 23 // 4096


def faults_of_later_rounds(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True,
                            env=subprocess_env(), timeout=120, check=True)
    return int(result.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_blocks_are_reused_without_page_faults():
    kept, default = faults_of_later_rounds("keep"), faults_of_later_rounds("default")
    print(f"minor page faults in rounds 3-4: kept {kept}, glibc's defaults {default} (of {PAGES} pages)")
    # Measured on an AMD EPYC: kept 0 or 2048 (one 8 MiB block placed anew), defaults 6112-8130.
    assert kept <= PAGES // 4
    assert default >= PAGES // 3  # the faults this exists to remove (the check is not vacuous)


def test_qarac_train_on_cpu_keeps_freed_memory(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(train_module, "keep_freed_memory", lambda: calls.append(True) or True)
    train_module.train(tiny_train_config(tmp_path / "run", data_dir=str(small_corpus(tmp_path / "data")),
                                         max_steps=1))
    assert calls == [True]
