"""The parity harness: weight bridge, forward parity, localisation, gradients, ledger, command."""

import json

import numpy as np
import pytest
import torch

tf = pytest.importorskip("tensorflow", reason="needs the `legacy` extra (TensorFlow + tf-keras)")

from model_helpers import trainer_batch  # noqa: E402
from parity import bridge  # noqa: E402
from parity.compare import ParityFailure, compare_arrays  # noqa: E402
from parity.live import assert_forward_parity, localise  # noqa: E402
from parity.live import build_models  # noqa: E402
from parity.inputs import sample_batch  # noqa: E402


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    return build_models(tiny_model_dir)


@pytest.fixture(scope="module")
def batch(tiny_model_dir, models):
    return sample_batch(tiny_model_dir, models[1].config, batch_size=3)


# --- weight bridge ---------------------------------------------------------------------------

def test_every_weight_maps_one_to_one(models):
    tf_model, pt_legacy, _, weight_map = models
    assert weight_map.complete
    # parameters() lists shared and tied tensors once, as the legacy lists its variables
    assert len(weight_map.entries) == len(tf_model.weights) == len(list(pt_legacy.parameters()))
    assert weight_map.tied["decoder.decoder_head.head.decoder.weight"] == "decoder.decoder.embeddings.word_embeddings.weight"
    names = {entry.pt_name for entry in weight_map.entries}
    assert "answer_encoder.encoder.embeddings.word_embeddings.weight" not in names  # shared base named once
    assert any("answer_encoder.encoder.embeddings.word_embeddings.weight" in group for group in weight_map.shared)


def test_reverse_map_is_the_inverse(models):
    weight_map = models[3]
    forward_map, reverse_map = weight_map.tf_to_pt(), weight_map.pt_to_tf()
    assert len(forward_map) == len(reverse_map) == len(weight_map.entries)
    assert all(reverse_map[pt] == tf_name for tf_name, pt in forward_map.items())


def test_layouts_kernels_transposed_projections_not(models):
    entries = {e.pt_name: e for e in models[3].entries}
    query = entries["question_encoder.encoder.encoder.layer.0.attention.self.query.weight"]
    assert query.transposed and query.tf_shape == (32, 32)
    intermediate = entries["decoder.decoder_head.layer_1.intermediate.dense.weight"]
    assert intermediate.transposed and intermediate.tf_shape == (32, 37) and intermediate.pt_shape == (37, 32)
    projection = entries["question_encoder.head.local_projection"]
    assert not projection.transposed and projection.tf_name.endswith("local projection:0")


def test_pt_tf_pt_round_trip_is_bit_exact(models):
    tf_model, _, _, weight_map = models
    torch.manual_seed(7)
    fresh = type(models[1])(models[1].config)  # different random weights
    original = {k: v.clone() for k, v in fresh.state_dict().items()}
    saved_tf = [v.numpy().copy() for v in tf_model.weights]
    try:
        bridge.copy_pt_to_tf(fresh, tf_model, weight_map)
        with torch.no_grad():
            for p in fresh.parameters():
                p.zero_()
        bridge.copy_tf_to_pt(tf_model, fresh, weight_map)
        assert all(torch.equal(original[k], v) for k, v in fresh.state_dict().items())
    finally:
        for variable, value in zip(tf_model.weights, saved_tf):
            variable.assign(value)


def test_round_trip_check_sees_a_value_that_does_not_survive(models, monkeypatch):
    from parity.legacy.record import round_trip_exact

    tf_model, pt_legacy, _, weight_map = models
    saved_tf = [v.numpy().copy() for v in tf_model.weights]
    copy = bridge.copy_pt_to_tf

    def lossy_copy(pt, tf, wm):
        copy(pt, tf, wm)
        variable = tf_model.trainable_variables[3]
        variable.assign(variable + 1e-6)

    try:
        assert round_trip_exact(tf_model, pt_legacy, weight_map)
        monkeypatch.setattr(bridge, "copy_pt_to_tf", lossy_copy)
        assert not round_trip_exact(tf_model, pt_legacy, weight_map)
    finally:
        for variable, value in zip(tf_model.weights, saved_tf):
            variable.assign(value)


def test_unmapped_parameter_is_named(models):
    tf_model = models[0]
    default = models[2]  # no pooler: the legacy pooler variables have nowhere to go
    weight_map = bridge.build_weight_map(tf_model, default)
    assert sorted(weight_map.tf_only) == sorted(v.name for v in tf_model.weights if "pooler" in v.name)
    with pytest.raises(bridge.BridgeError, match="legacy-only .*pooler/dense/kernel:0"):
        bridge.copy_tf_to_pt(tf_model, default)


def test_shape_mismatch_is_reported(models, tiny_model_dir):
    from qarac import QaracTrainerModel

    other = QaracTrainerModel(models[1].config.replace(base={**models[1].config.base, "intermediate_size": 41}))
    weight_map = bridge.build_weight_map(models[0], other)
    assert any("intermediate/dense/kernel:0 (32, 37)" in m and "(41, 32)" in m for m in weight_map.mismatched)


# --- forward -------------------------------------------------------------------------------

def test_forward_parity_api(models, batch):
    comparisons = assert_forward_parity(models[1], models[0], batch.inputs)
    assert {c.name for c in comparisons} >= {"forward.question_encoder", "forward.trainer.consistency"}
    assert max(c.max_abs_err for c in comparisons) < 1e-5


def test_forward_parity_api_fails_on_a_wrong_weight(models, batch):
    pt_model = models[1]
    weight = pt_model.answer_encoder.head.global_projection
    with torch.no_grad():
        weight[3, 5] += 0.5
    try:
        with pytest.raises(ParityFailure, match="forward.answer_encoder: max abs err"):
            assert_forward_parity(pt_model, models[0], batch.inputs)
    finally:
        with torch.no_grad():
            weight[3, 5] -= 0.5


@pytest.mark.parametrize("parameter, stage", [
    ("decoder.decoder.encoder.layer.1.attention.self.query.weight", "decoder base: layer 1 (offset_text)"),
    ("question_encoder.encoder.encoder.layer.0.output.dense.bias", "encoder base: layer 0 (all_text)"),
    ("answer_encoder.head.local_projection", "answer encoder head: output (all_text)"),
    ("question_encoder.head.global_projection", "question encoder head: output (question)"),
    ("decoder.decoder_head.layer_1.output.LayerNorm.weight", "decoder head: layer_1 (offset_text)"),
])
def test_planted_error_is_localised(models, batch, parameter, stage):
    pt_model = models[1]
    weight = dict(pt_model.named_parameters())[parameter]
    index = (0,) * weight.dim()
    with torch.no_grad():
        weight[index] += 0.25
    try:
        assert localise(pt_model, models[0], batch.inputs).first_failure == stage
    finally:
        with torch.no_grad():
            weight[index] -= 0.25
    assert localise(pt_model, models[0], batch.inputs).first_failure is None


def test_compare_arrays_reports_worst_element_and_padding_apart():
    reference = np.zeros((2, 3, 4), dtype=np.float32)
    candidate = reference.copy()
    candidate[1, 0, 2] = 3e-5  # real token
    candidate[0, 2, 1] = 1.0  # padding position
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    result = compare_arrays("x", candidate, reference, tolerance=1e-5, token_mask=mask)
    assert result.worst_index == (1, 0, 2) and result.max_abs_err == pytest.approx(3e-5)
    assert result.padding_max_abs_err == 1.0 and not result.passed
    assert compare_arrays("x", candidate, reference, tolerance=1e-4, token_mask=mask).passed


def test_compare_arrays_structural_failures():
    assert "shape differs" in compare_arrays("x", np.zeros(3), np.zeros(4)).problem
    nan = np.array([1.0, np.nan])
    assert "non-finite values differ at 1 positions, first at (1,): pytorch nan" in \
        compare_arrays("x", nan, np.array([1.0, 2.0])).problem
    assert compare_arrays("x", nan, nan).passed  # NaN in the same place on both sides is not an error


# --- gradients and ledger ------------------------------------------------------------------

def test_gradient_census_and_causes():
    from parity.gradients import DEAD, LOST, attribute_causes, census

    grads = {"question_encoder.encoder.pooler.dense.weight": None,
             "question_encoder.head.local_projection": None,
             "answer_encoder.head.global_projection": np.zeros((2, 2)),
             "decoder.decoder_head.head.bias": np.array([np.nan, 1.0]),
             "decoder.decoder_head.head.dense.weight": np.ones((2, 2))}
    flow = census(grads)
    assert flow.missing == ["question_encoder.encoder.pooler.dense.weight", "question_encoder.head.local_projection"]
    assert flow.zero == ["answer_encoder.head.global_projection"]
    assert flow.nonfinite == ["decoder.decoder_head.head.bias"]
    attribute_causes(flow, [{"question_encoder.head.local_projection": np.ones(1),
                             "question_encoder.encoder.pooler.dense.weight": None}])
    assert flow.causes == {"question_encoder.encoder.pooler.dense.weight": DEAD,
                           "question_encoder.head.local_projection": LOST}


def test_gradient_parity_on_the_bridged_models(models, batch):
    from parity.gradient_parity import GRADIENT_TOLERANCE, compare_gradients
    from parity.port_gradients import torch_gradients
    from parity.legacy.tensors import tf_gradients

    tf_model, pt_legacy, _, weight_map = models
    tf_grads = weight_map.as_pt(tf_gradients(tf_model, batch.inputs, batch.targets, "eager"))
    comparisons = compare_gradients(torch_gradients(pt_legacy, batch.inputs, batch.targets), tf_grads)
    assert len(comparisons) == len(weight_map.entries) - 4  # the pooler has no gradient on either side
    assert max(c.max_rel_err for c in comparisons) <= GRADIENT_TOLERANCE


def test_deviation_ledger(models, batch):
    from parity.ledger import measure_deviations

    deviations = {d.option: d for d in measure_deviations(models[1], batch.inputs, batch.targets)}
    assert set(deviations) == {"pooling_masks_padding", "causal_decoder_head", "keep_pooler", "loss_ignores_padding",
                               "all options (default preset)"}
    assert all(d.passed for d in deviations.values())
    pooler = deviations["keep_pooler"]
    assert max(pooler.output_change.values()) == 0.0 and pooler.parameters_removed == 4
    assert deviations["pooling_masks_padding"].output_change["question_answering"] > 1e-3
    assert deviations["causal_decoder_head"].output_change["question_answering"] == 0.0
    assert deviations["causal_decoder_head"].output_change["encode_decode"] > 1e-4
    loss_only = deviations["loss_ignores_padding"]
    assert max(loss_only.output_change.values()) == 0.0 and loss_only.loss_change["encode_decode"] > 0


# --- the command ---------------------------------------------------------------------------

REPORT_FIELDS = {"model", "versions", "weights", "forward", "layers", "gradients", "reachability",
                 "gradient_parity", "deviations", "passed", "timings_s", "localisation", "stage_errors",
                 "first_introducing_stage", "noise_floors", "verdict"}


@pytest.mark.slow
def test_qarac_parity_command_end_to_end(tmp_path, tiny_model_dir):
    # One live run serves every assertion on it (it is the suite's slowest step): the report's
    # contents, and that `--quiet` prints one line with no TensorFlow log on stderr.
    import subprocess
    import sys

    paths = {"json": tmp_path / "r.json", "markdown": tmp_path / "r.md", "plot": tmp_path / "g.png"}
    command = [sys.executable, "-m", "parity", "--model", str(tiny_model_dir), "--quiet",
               *[arg for key, path in paths.items() for arg in (f"--{key}", str(path))]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stdout.splitlines()) == 1 and "PASSED" in result.stdout
    for noise in ("cuInit", "absl", "oneDNN", "cudart"):
        assert noise not in result.stderr, result.stderr[-3000:]
    report = json.loads(paths["json"].read_text())
    assert REPORT_FIELDS <= set(report) and report["passed"] is True
    assert set(report["weights"]) >= {"mapped", "tf_only", "pt_only", "mismatched"}
    assert set(report["gradients"]) == {"tf/eager", "tf/graph", "tf/fit", "pt/legacy", "pt/default"}
    assert all(set(entry) >= {"name", "max_abs_err", "max_rel_err", "tolerance", "passed"} for entry in report["forward"])
    assert len(report["gradients"]["tf/fit"]["missing"]) == 6 and report["gradients"]["pt/default"]["missing"] == []
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "g_stages.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # introduced vs accumulated
    assert report["verdict"]["mode"] == "noise floor" and report["first_introducing_stage"] is None
    assert report["checks"]["localised"] and report["checks"]["deviations_declared"]
    assert report["checks"]["float64_exactness"] and report["checks"]["gradient_missing_sets_agree"]
    assert all(entry["floor_ratio"] <= report["verdict"]["bound_in_floors"] for entry in report["forward"])
    assert {"padded", "sharp"} <= set(report["stage_errors"]) and "sharp" in report["noise_floors"]
    assert "## Gradient flow" in paths["markdown"].read_text()


@pytest.mark.parametrize("setup, message", [
    ("missing", "does not exist"),
    ("bert", "not a RoBERTa checkpoint"),
    ("corrupt", "not a readable safetensors file"),
])
def test_qarac_parity_bad_input_exits_2(tmp_path, tiny_model_dir, capsys, setup, message):
    import shutil

    from parity.cli import main

    model = tmp_path / "model"
    if setup == "bert":
        model.mkdir()
        (model / "config.json").write_text(json.dumps({"model_type": "bert"}))
    elif setup == "corrupt":
        model.mkdir()
        shutil.copy(tiny_model_dir / "config.json", model / "config.json")
        (model / "model.safetensors").write_bytes(b"\x00" * 32)
    assert main(["--model", str(model)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0]


# --- properties ------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def tiny_architectures(draw):
    heads = draw(st.sampled_from([1, 2, 4]))
    head_size = draw(st.sampled_from([4, 8, 12]))
    return {"hidden_size": heads * head_size, "num_attention_heads": heads,
            "num_hidden_layers": draw(st.integers(1, 2)), "intermediate_size": draw(st.sampled_from([13, 37]))}


@pytest.mark.slow
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tiny_architectures(), st.integers(1, 4), st.integers(3, 12), st.booleans(), st.integers(0, 1000))
def test_forward_parity_holds_for_random_tiny_configs(tmp_path_factory, architecture, batch_size, length, padded, seed):
    from parity.live import compare_outputs
    from qarac.presets import build_base_checkpoint

    model_dir = build_base_checkpoint(tmp_path_factory.mktemp("arch") / "model", "tiny", seed, **architecture)
    tf_model, pt_legacy, _, _ = build_models(model_dir)
    inputs, _ = trainer_batch(batch_size, length, padded=padded, seed=seed)
    failures = [c for c in compare_outputs(pt_legacy, tf_model, inputs, "random") if not c.passed]
    assert not failures, failures


@pytest.mark.slow
def test_training_parity_with_legacy_fit(fresh_recording, tiny_model_dir, monkeypatch):
    from parity.legacy import training as legacy_training
    from parity.live import training_parity
    from parity.training import TRAINING_TOLERANCE

    # The legacy's K steps of `fit` are the suite's one fresh recording's (`record_legacy_training` with
    # the shipped bundle's settings: 3 steps of batch 4, seed 0), handed to the live function in place
    # of recording them a second time.
    settings = fresh_recording.training.settings
    steps, batch_size, seed = settings["steps"], settings["batch_size"], settings["seed"]

    def recorded(model_dir, *args):
        assert (model_dir, *args) == (tiny_model_dir, steps, batch_size, seed)
        return fresh_recording.training, fresh_recording.weights

    monkeypatch.setattr(legacy_training, "record_legacy_training", recorded)
    result = training_parity(tiny_model_dir, steps=steps, batch_size=batch_size, seed=seed)
    # On the original's batches (docs/legacy.md §1.5), built by each side's own pipeline code, identical.
    assert result.data == "legacy_pipeline" and result.batches_identical
    assert len(result.batch_indices) == steps >= 3 and not set(result.batch_indices) & set(result.ragged_batches_skipped)
    assert result.passed and result.max_abs_diff <= TRAINING_TOLERANCE
    assert len(result.steps) == steps and result.steps[0]["abs_diff"]["total"] < 1e-5
    # The comparison is sharp: torch's default NAdam, or the traced legacy fit with its
    # lost gradients and re-multiplied momentum product, are far outside the tolerance.
    assert result.control_torch_default_nadam_max_abs_diff > 100 * TRAINING_TOLERANCE
    assert result.legacy_graph_fit_max_abs_diff > 100 * TRAINING_TOLERANCE


def test_gradient_parity_treats_key_bias_noise_apart():
    from parity.gradient_parity import compare_gradients

    largest = {"decoder.decoder_head.head.dense.weight": np.full((2, 2), 10.0)}
    noise = {"decoder.decoder.encoder.layer.0.attention.self.key.bias": np.array([1e-12, -2e-12])}
    other_noise = {"decoder.decoder.encoder.layer.0.attention.self.key.bias": np.array([-3e-12, 1e-12])}
    results = {c.name: c for c in compare_gradients({**largest, **noise}, {**largest, **other_noise})}
    assert all(c.passed for c in results.values())  # relative error of pure noise is not held against it
    real = {"decoder.decoder.encoder.layer.0.attention.self.key.bias": np.array([1e-3, 0.0])}
    results = {c.name: c for c in compare_gradients({**largest, **real}, {**largest, **real})}
    assert not results["decoder.decoder.encoder.layer.0.attention.self.key.bias"].passed  # a real key-bias gradient is a bug
    off = {"decoder.decoder_head.head.dense.weight": np.full((2, 2), 10.01)}
    assert not compare_gradients(off, largest)[0].passed  # 1e-3 relative on an ordinary parameter
