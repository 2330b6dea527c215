"""The user's pair (tests/user_pair.py) live: the Keras original recorded in this process, the port
checked against it; a planted bug fails the same way as from the shipped bundle; the recording is
a bundle the check reads back."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs the `legacy` extra (TensorFlow + tf-keras)")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the user's spec lives beside the tests

from parity.core import codec, pipeline, recording  # noqa: E402
from parity.core.report import verdict_line  # noqa: E402
from parity.pairs import Rule, WeightMap, gate_blocks  # noqa: E402
from user_pair import SPEC, WEIGHTS  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "fixtures" / "user_pair"


@pytest.fixture(scope="module")
def fresh():
    return recording.record(SPEC)


def test_the_port_passes_live_and_through_the_bundle_it_writes(fresh, tmp_path):
    report = pipeline.check(SPEC, fresh)
    assert report.passed, verdict_line(report)
    codec.write(fresh, tmp_path / "bundle")
    again = pipeline.check(SPEC, codec.read(tmp_path / "bundle", SPEC.name))
    assert again.passed and [v.error for v in again.values] == [v.error for v in report.values]


def test_the_traced_step_reaches_what_the_eager_tape_does(fresh):
    eager, graph = fresh.gradients["eager"], fresh.gradients["tf.function"]
    assert set(eager) == set(graph) and not [k for k, v in eager.items() if v is None]
    assert [k for k, v in graph.items() if v is None] == []


def test_swapped_gates_fail_live_at_the_lstm(fresh):
    swapped = replace(SPEC, weights=WeightMap(tuple(
        Rule(r.keras, r.torch, gate_blocks("ifco", "fico")) if r.keras == "lstm/lstm_cell/kernel" else r
        for r in WEIGHTS.rules)))
    report = pipeline.check(swapped, fresh)
    assert report.first_failing_stage == "padded: stage:lstm"


def test_a_fresh_recording_holds_the_shipped_batches_and_stages(fresh):
    shipped = codec.read(SHIPPED, SPEC.name)
    assert [vars(s) for s in fresh.stages] == [vars(s) for s in shipped.stages]
    for case, batch in shipped.batches.items():
        np.testing.assert_array_equal(fresh.batches[case].inputs["token_ids"], batch.inputs["token_ids"])
