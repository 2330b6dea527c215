"""Which noise variants run on a batch: the reorderings are skipped only when told, and say so."""

from __future__ import annotations

import torch

from model_helpers import tiny_config, trainer_batch
from parity.capture import capture_torch
from parity.noise import REORDER_VARIANTS, SKIPPED_REORDER, compared_values, floors, reorder_moved
from parity.port_noise import port_noise
from parity.tolerance import PRECISION_BOUND
from qarac import QaracTrainerModel


def _floors(reorder: bool):
    torch.manual_seed(0)
    model = QaracTrainerModel(tiny_config().legacy()).eval()
    inputs, _ = trainer_batch()
    capture = capture_torch(model, inputs)
    legacy_variants = {name: {} for name in compared_values(capture)}  # the legacy's side, none here
    port, _ = port_noise(model, inputs, capture, 0, reorder)
    return floors(port, capture, legacy_variants, inputs)


def test_reorderings_run_unless_skipped_and_a_skip_is_explained():
    full, reduced = _floors(True), _floors(False)
    no_float64 = {"legacy float64": "no float64 run of the legacy recorded: the port's own rounding counts "
                                    f"up to {PRECISION_BOUND:g} ulps of each value"}
    assert full.skipped == no_float64
    # the port's own code path only: never another attention implementation
    assert all(set(variants) == {"float64", *REORDER_VARIANTS} for variants in full.pytorch.values())
    assert reduced.skipped == {**no_float64, **{variant: SKIPPED_REORDER for variant in REORDER_VARIANTS}}
    assert all(set(variants) == {"float64"} for variants in reduced.pytorch.values())
    # the floor is the largest variant (or one ulp): dropping variants can only lower it
    assert all(reduced.floor[name] <= full.floor[name] for name in full.floor)


def test_reorder_moved_reads_only_the_reorderings():
    assert not reorder_moved({"a": {"float64": 1.0, "permuted_batch": 0.0, "one_thread": 0.0}})
    assert reorder_moved({"a": {"float64": 0.0}, "b": {"one_thread": 1e-9}})
    assert reorder_moved({"a": {"permuted_batch": 2e-7}})
    assert not reorder_moved({"a": {}})
