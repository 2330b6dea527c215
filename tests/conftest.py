"""Fixtures for the test suite; the builders live in model_helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep the embedded tiny model that tests build out of the user's cache.
os.environ.setdefault("QARAC_HOME", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "qarac_home"))

from model_helpers import tiny_config  # noqa: E402
from qarac import QaracConfig  # noqa: E402


# Session fixtures costly enough that, under pytest-xdist (`make test` runs two workers), every test
# reading one runs on the same worker, so each is built once, as in a single process: fixture -> group.
SHARED_FIXTURES = {
    "fresh_recording": "legacy recording",
    "legacy_trainer": "legacy trainer",
    "legacy_batch": "legacy trainer",
    "backend_runs": "keras3 runners",
}


def pytest_configure(config):
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        # The controller builds the embedded tiny model into the cache before any worker starts, so two
        # workers never build (and replace) the same directory at once.
        from qarac.presets import tiny_model_dir

        tiny_model_dir()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark each test with an `xdist_group` (read by `--dist loadgroup`): the group (`SHARED_FIXTURES`)
    of a shared session fixture it reads, else its module. A shared fixture is then built on one worker
    only, and a module's other tests on one worker, building its module-scoped fixtures there once."""
    for item in items:
        shared = [group for name, group in SHARED_FIXTURES.items() if name in item.fixturenames]
        item.add_marker(pytest.mark.xdist_group(shared[0] if shared else item.nodeid.split("::", 1)[0]))


@pytest.fixture
def config() -> QaracConfig:
    return tiny_config()


@pytest.fixture
def legacy_config() -> QaracConfig:
    return tiny_config().legacy()


@pytest.fixture(scope="session")
def tiny_model_dir():
    from qarac.presets import tiny_model_dir as build

    return build()


@pytest.fixture(scope="session")
def fresh_recording(tiny_model_dir):
    """The legacy recorded again (`record_legacy`, needs TensorFlow) with the shipped bundle's settings
    (seed, batch size, training steps): one recording, the suite's slowest step, serves each test that
    reads one (the reproduction of the bundle, training parity, the `fit` probe's names)."""
    from parity.bundle import read_bundle
    from parity.legacy.record import record_legacy

    shipped = read_bundle(Path(__file__).resolve().parent.parent / "reference" / "tiny")
    return record_legacy(tiny_model_dir, shipped.meta["seed"], shipped.meta["batch_size"],
                         shipped.results["training"]["settings"]["steps"])


# Module-scoped, so each test module gets its own instance (a test that changes one cannot reach another module).
@pytest.fixture(scope="module")
def tokenizer():
    """The embedded RoBERTa tokenizer."""
    from qarac.tokenizer import load_default_tokenizer

    return load_default_tokenizer()


@pytest.fixture(scope="module")
def corpora():
    """The four sample corpora shipped in the repository."""
    from qarac.data.corpora import DEFAULT_DATA_DIR, Corpora

    return Corpora.from_directory(DEFAULT_DATA_DIR)

