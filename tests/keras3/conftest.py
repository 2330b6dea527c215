"""Shared fixtures of the Keras 3 tests: the three backend runners, run once per session.

The reference side is the port's legacy preset (proved equal to the legacy by the parity
suite), so these tests need no legacy recording: the runners get the port's weights and the
harness's padded sample batch through the same files and code (`parity.keras3`) as a
`qarac-parity --keras3` run.
"""

import pytest


@pytest.fixture(scope="session")
def port_reference(tiny_model_dir):
    from keras3_helpers import port_reference as build

    return build(tiny_model_dir)


@pytest.fixture(scope="session")
def backend_runs(port_reference, tmp_path_factory):
    """Every backend's runner on the port's weights and batch, all started at once."""
    from parity.keras3 import BACKENDS, run_backends, write_work

    work = tmp_path_factory.mktemp("keras3")
    write_work(work, port_reference)
    return run_backends(work, BACKENDS)
