"""Fixtures for the test suite; the builders live in model_helpers.py."""

from __future__ import annotations

import os

import pytest

# Keep the embedded tiny model that tests build out of the user's cache.
os.environ.setdefault("QARAC_HOME", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "qarac_home"))

from model_helpers import tiny_config  # noqa: E402
from qarac import QaracConfig  # noqa: E402


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
