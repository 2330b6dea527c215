"""`make test` runs two pytest-xdist workers; tests/conftest.py's hook sends every test reading a
costly session fixture (the legacy recording) to one worker, so it is built once. Checked on an inner
suite that uses that very hook: if grouping silently stops (a pytest or xdist upgrade, the hook run
after xdist's own), the suite still passes but records the legacy twice, and this test fails."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent

INNER_CONFTEST = f"""
import importlib.util
import os
import sys

import pytest

sys.path.insert(0, {str(TESTS)!r})
_spec = importlib.util.spec_from_file_location("suite_conftest", {str(TESTS / "conftest.py")!r})
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)
pytest_collection_modifyitems = _suite.pytest_collection_modifyitems  # the suite's grouping hook


@pytest.fixture(scope="session")
def fresh_recording(tmp_path_factory):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    (tmp_path_factory.getbasetemp().parent / f"built_on_{{worker}}").write_text("")
    return worker
"""


def test_a_shared_session_fixture_is_built_on_one_worker(tmp_path):
    suite = tmp_path / "inner"
    suite.mkdir()
    (suite / "conftest.py").write_text(INNER_CONFTEST)
    for module in range(4):
        (suite / f"test_m{module}.py").write_text(textwrap.dedent("""
            def test_reads_the_recording(fresh_recording):
                assert fresh_recording

            def test_other():
                pass
        """))
    # a fresh session, not a worker of the run this test is in (PYTEST_XDIST_WORKER and the like)
    base = tmp_path / "basetemp"  # each worker takes a folder in it
    finished = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup",
                               "-p", "no:cacheprovider", "--basetemp", str(base), str(suite)],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300,
                              env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")})
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    built_on = sorted(path.name for path in tmp_path.rglob("built_on_*"))
    assert len(built_on) == 1, f"the shared fixture was built on {built_on}"
