"""Each Keras 3 backend runner: the original design on keras-hub's RoBERTa computes what the port
computes, and its gradient census is the measured one (README "Would Keras 3 have been enough?")."""

import numpy as np
import pytest

pytest.importorskip("keras_hub", reason="needs the `keras3` extra (Keras 3, keras-hub, JAX)")
pytest.importorskip("jax", reason="needs the `keras3` extra (Keras 3, keras-hub, JAX)")
pytest.importorskip("tensorflow", reason="the Keras 3 TensorFlow backend needs TensorFlow")
pytestmark = [pytest.mark.keras3, pytest.mark.slow]

from keras3_helpers import LOCAL_PROJECTIONS, POOLER, fixed_tolerance_report, with_array  # noqa: E402

from parity.keras3 import BACKENDS, column, keras3_section  # noqa: E402


def section(port_reference, runs):
    return keras3_section(fixed_tolerance_report(), port_reference, runs, port_reference.meta["model_config"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_runner_ran(backend_runs, backend):
    run = backend_runs[backend]
    assert run.error is None, run.results.get("traceback")
    assert run.results["backend"] == backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_matches_the_port_output_by_output_and_stage_by_stage(port_reference, backend_runs, backend):
    entry = section(port_reference, {backend: backend_runs[backend]})[0]["backends"][backend]
    failing = [c["name"] for c in entry["forward"] + entry["stages"] if not c["passed"]]
    assert not failing, failing
    # every stage of the harness was captured, in the port's execution order
    assert [c["name"] for c in entry["stages"]] == port_reference.captures["padded"].order


@pytest.mark.parametrize("backend", BACKENDS)
def test_eager_gradients_match_the_port(port_reference, backend_runs, backend):
    entry = section(port_reference, {backend: backend_runs[backend]})[0]["backends"][backend]
    assert entry["gradient_parity_passed"], [c for c in entry["gradient_parity"] if not c["passed"]][:3]
    # JAX returns zeros where the legacy returns None (the poolers): compared as declared one-sided.
    declared = {c["name"] for c in entry["gradient_parity"] if c.get("problem")}
    assert declared == (POOLER if backend == "jax" else set())
    assert len(entry["gradient_parity"]) - len(declared) == len(port_reference.parameters) - len(POOLER)


# Measured (keras 3.15.1, keras-hub 0.32.0; TensorFlow 2.21, torch 2.13, JAX 0.10.2): which of the
# seed's six get no gradient (None) and which an all-zero one, per backend and mode.
EXPECTED = {
    ("tensorflow", "eager"): (POOLER, set()),
    ("tensorflow", "compiled"): (POOLER | LOCAL_PROJECTIONS, set()),  # the original's nested tf.function
    ("torch", "eager"): (POOLER, set()),
    ("torch", "compiled"): (POOLER, set()),
    ("jax", "eager"): (set(), POOLER),  # JAX returns zeros, never None
    ("jax", "compiled"): (set(), POOLER),
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_census_per_mode(port_reference, backend_runs, backend):
    _, flows, checks = section(port_reference, {backend: backend_runs[backend]})
    assert checks["keras3_census_complete"]
    for mode in ("eager", "compiled"):
        flow = flows[column(backend, mode)]
        missing, zero = EXPECTED[(backend, mode)]
        assert (set(flow.missing), set(flow.zero), flow.nonfinite) == (missing, zero, []), (backend, mode)
        for name in POOLER:
            assert flow.causes[name].startswith("dead parameter")
        for name in LOCAL_PROJECTIONS & missing:
            assert flow.causes[name].startswith("lost gradient")


def test_tensorflow_fit_warns_about_the_seed_six(backend_runs):
    compiled = backend_runs["tensorflow"].results["modes"]["compiled"]
    assert "local projection" in compiled["warning"] and "pooler" in compiled["warning"]


def test_a_planted_stage_error_is_located(port_reference, backend_runs):
    """A difference entering at one stage fails the forward check and is named there, not earlier."""
    stage = next(key for key in backend_runs["torch"].results["order"] if key.startswith("stage/decoder head: layer_0"))
    planted = with_array(backend_runs["torch"], stage, lambda value: value + 1e-3)
    result, _, checks = section(port_reference, {"torch": planted})
    entry = result["backends"]["torch"]
    assert not checks["keras3_forward"]
    assert entry["first_failing_stage"] == "decoder head: layer_0 (offset_text)"


def test_a_planted_gradient_error_fails_gradient_parity(port_reference, backend_runs):
    key = "grad/eager/answer_encoder.head.global_projection"
    planted = with_array(backend_runs["jax"], key, lambda value: value * 1.01)
    entry = section(port_reference, {"jax": planted})[0]["backends"]["jax"]
    assert not entry["gradient_parity_passed"]
    assert [c["name"] for c in entry["gradient_parity"] if not c["passed"]] == ["answer_encoder.head.global_projection"]


def test_a_forward_running_other_stages_fails_without_stopping_the_run(port_reference, backend_runs):
    """A backend whose forward skipped a stage the legacy ran: a failed check with the reason, not a crash."""
    from parity.keras3 import BackendRun

    run = backend_runs["torch"]
    results = {**run.results, "order": [key for key in run.results["order"] if "decoder head: layer_1" not in key]}
    result, _, checks = section(port_reference, {"torch": BackendRun("torch", results, run.arrays, run.wall_s)})
    assert not checks["keras3_forward"]
    assert "different stages" in result["backends"]["torch"]["forward_problem"]


def test_a_failed_runner_fails_the_run_with_its_reason(port_reference, backend_runs):
    from parity.keras3 import BackendRun

    broken = BackendRun("jax", {"error": "RuntimeError: planted"})
    report, _, checks = section(port_reference, {"jax": broken, "torch": backend_runs["torch"]})
    assert not checks["keras3_runs"] and not checks["keras3_census_complete"]
    assert report["backends"]["jax"]["error"] == "RuntimeError: planted"


@pytest.mark.parametrize("backend", ["torch"])
def test_a_transposed_weight_is_caught_through_the_runner(port_reference, tmp_path, backend):
    """The weight a transposition bug in the map would hand Keras (a square kernel: shapes cannot tell),
    through the runner's own files and code: the first layer that reads it is named."""
    from types import SimpleNamespace

    from parity.keras3 import run_backends, write_work

    name = "question_encoder.encoder.encoder.layer.0.attention.self.query.weight"
    weights = {**port_reference.weights, name: port_reference.weights[name].T.copy()}
    planted = SimpleNamespace(**{**vars(port_reference), "weights": weights})
    write_work(tmp_path, planted)
    runs = run_backends(tmp_path, (backend,))
    entry = section(port_reference, runs)[0]["backends"][backend]
    assert not entry["forward_passed"]
    assert entry["first_failing_stage"] == "encoder base: layer 0 (all_text)"
    assert np.isfinite(entry["forward"][0]["max_abs_err"])


def test_without_the_nested_tf_function_tensorflow_fit_keeps_the_local_projections(port_reference, tmp_path):
    """The plain Keras 3 translation (`ops.vectorized_map` over the undecorated projection): on the
    TensorFlow backend `fit` then loses only the dead pooler, as PyTorch and JAX do."""
    from parity.keras3 import run_backends, write_work

    write_work(tmp_path, port_reference, nested_tf_function=False)
    runs = run_backends(tmp_path, ("tensorflow",))
    assert runs["tensorflow"].results["nested_tf_function"] is False
    result, flows, checks = section(port_reference, runs)
    assert checks["keras3_forward"] and checks["keras3_gradient_parity"]
    for mode in ("eager", "compiled"):
        assert set(flows[column("tensorflow", mode)].missing) == POOLER, mode


def test_a_base_directory_missing_a_tensor_is_refused_naming_it(port_reference, tmp_path):
    """Strict loading from the HF directory: a missing tensor is the runner's one-line error, and the run fails."""
    import shutil
    from types import SimpleNamespace

    from safetensors.numpy import load_file, save_file

    from parity.keras3 import run_backends, write_work

    model_dir = tmp_path / "model"
    shutil.copytree(port_reference.meta["model"], model_dir)
    tensors = load_file(str(model_dir / "model.safetensors"))
    del tensors["pooler.dense.bias"]
    save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    broken = SimpleNamespace(**{**vars(port_reference), "meta": {**port_reference.meta, "model": str(model_dir)}})
    write_work(tmp_path, broken)
    runs = run_backends(tmp_path, ("torch",))
    assert "missing tensors ['pooler.dense.bias']" in runs["torch"].error
    assert len(runs["torch"].error.splitlines()) == 1
    _, _, checks = section(port_reference, runs)
    assert not checks["keras3_runs"]


def test_report_and_plot_show_every_keras3_column(port_reference, backend_runs, tmp_path):
    from types import SimpleNamespace

    from parity.plot import plot_gradient_flow
    from parity.report import keras3_markdown

    result, flows, _ = section(port_reference, backend_runs)
    report = SimpleNamespace(keras3=result, gradients={key: flow.to_dict() for key, flow in flows.items()})
    markdown = "\n".join(keras3_markdown(report))
    for backend in BACKENDS:
        for mode in ("eager", "compiled"):
            assert f"| {column(backend, mode)} |" in markdown
    assert "| answer_encoder.head.local_projection | gradient | missing | gradient |" in markdown
    plot_gradient_flow(report, tmp_path / "flow.png")
    assert (tmp_path / "flow.png").stat().st_size > 10_000
