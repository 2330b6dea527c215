"""Sharpness checks that need the legacy itself: the port's float64 twin cannot hide a port bug, and a
bug only the backward pass shows is located by the per-stage backward."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="needs the `legacy` extra (TensorFlow + tf-keras)")

from parity.capture import capture_torch  # noqa: E402
from parity.legacy.capture import capture_keras  # noqa: E402
from parity.live import build_models  # noqa: E402
from parity.inputs import sample_batch  # noqa: E402
from parity.legacy.capture import legacy_floor_variants  # noqa: E402
from parity.noise import floors as noise_floors  # noqa: E402
from parity.port_noise import port_noise  # noqa: E402
from parity.tolerance import FLOOR_BOUND  # noqa: E402


class Models:
    def __init__(self, tf_model, pt_legacy, weight_map, batch):
        self.tf_model, self.pt_legacy, self.weight_map, self.batch = tf_model, pt_legacy, weight_map, batch


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    tf_model, pt_legacy, _, weight_map = build_models(tiny_model_dir)
    return Models(tf_model, pt_legacy, weight_map, sample_batch(tiny_model_dir, pt_legacy.config, batch_size=3))


def test_float64_oracle_cannot_hide_a_port_bug(models):
    """The port's part of the floors comes from the port's own float64 run, which shares the port's code: with a bug
    planted, float32 and float64 carry the same bug, the floors stay at rounding size, and the
    comparison with the legacy is still far over the bound."""
    import torch

    inputs = models.batch.inputs
    legacy = capture_keras(models.tf_model, inputs)
    parameters = dict(models.pt_legacy.named_parameters())
    query = parameters["decoder.decoder.encoder.layer.0.attention.self.query.weight"]
    key = parameters["decoder.decoder.encoder.layer.0.attention.self.key.weight"]
    original = query.detach().clone()
    with torch.no_grad():
        query.copy_(key)  # a weight-bridge bug: layer 0's query given the key's kernel
    try:
        pt = capture_torch(models.pt_legacy, inputs)
        port, _ = port_noise(models.pt_legacy, inputs, pt, 0, True)
        floors = noise_floors(port, legacy, legacy_floor_variants(models.tf_model, inputs, legacy), inputs).floor
    finally:
        with torch.no_grad():
            query.copy_(original)
    stage = "decoder base: layer 0 (offset_text)"
    assert floors[stage] < 1e-5  # rounding noise, not the bug
    error = np.abs(pt.stage_outputs[stage] - legacy.stage_outputs[stage]).max()
    assert error > 10 * FLOOR_BOUND * floors[stage]


def test_backward_error_is_located_at_the_stage_that_introduces_it(models):
    """A bug only the backward pass shows (layer_1's residual detached: same forward, lost gradient)
    is named by feeding each stage the legacy's input and upstream gradient."""
    import torch

    from parity.backward import introduced_backward
    from parity.legacy.capture import legacy_backward
    from parity.port_runner import stage_input_gradients

    inputs, targets = models.batch.inputs, models.batch.targets
    legacy = legacy_backward(models.tf_model, inputs, targets)
    clean = introduced_backward(stage_input_gradients(models.pt_legacy, legacy, inputs), legacy, inputs, 1e-4)
    assert all(c.passed for c in clean) and len(clean) == len(legacy.order)
    before = capture_torch(models.pt_legacy, inputs).outputs["encode_decode"]
    output = models.pt_legacy.decoder.decoder_head.layer_1.output
    original = output.forward
    output.forward = lambda hidden, residual: original(hidden, residual.detach())
    try:
        with torch.no_grad():  # the forward is unchanged
            assert np.array_equal(capture_torch(models.pt_legacy, inputs).outputs["encode_decode"], before)
        planted = introduced_backward(stage_input_gradients(models.pt_legacy, legacy, inputs), legacy, inputs, 1e-4)
    finally:
        del output.forward
    assert next(c.name for c in planted if not c.passed) == "decoder head: layer_1 (offset_text)"
