"""`qarac.optim.KerasNadam`: the multi-tensor step against torch's per-parameter NAdam
loop (the reference `qarac train` used before), bit for bit on CPU; the compiled step
within its stated ulp bound."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import qarac.optim as optim
from qarac.optim import MAX_COMPILED_ULPS, KerasNadam

shapes = st.lists(st.lists(st.integers(1, 9), min_size=0, max_size=3).map(tuple), min_size=1, max_size=5)


def run(implementation: str, initial: list[torch.Tensor], steps: int, seed: int = 1, lr: float = 0.05,
        skip: set[tuple[int, int]] = frozenset(), make=None):
    """Train copies of `initial` on random gradients for `steps` steps under an ExponentialDecay-like
    schedule; (step, index) in `skip` leaves that parameter without a gradient at that step."""
    parameters = [torch.nn.Parameter(p.clone()) for p in initial]
    if make is None:
        optimizer = KerasNadam(parameters, lr=lr, betas=(0.9, 0.999), eps=1e-7, implementation=implementation)
    else:
        optimizer = make(parameters)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 0.7 ** (k / 3))
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for index, parameter in enumerate(parameters):
            gradient = torch.randn(parameter.shape, generator=generator)
            parameter.grad = None if (step, index) in skip else gradient
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return parameters, optimizer


def assert_same_bits(reference, parameters, reference_optimizer, optimizer) -> None:
    for expected, actual in zip(reference, parameters):
        assert torch.equal(expected, actual), (expected - actual).abs().max()
    for expected, actual in zip(reference, parameters):
        state, other = reference_optimizer.state[expected], optimizer.state[actual]
        assert state.keys() == other.keys()
        assert all(torch.equal(state[key], other[key]) for key in state)


def initial_tensors(shape_list, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) for shape in shape_list]


@settings(max_examples=30, deadline=None)
@given(shape_list=shapes, steps=st.integers(1, 60), seed=st.integers(0, 2 ** 16),
       lr=st.sampled_from([1e-5, 1e-3, 0.05]))
def test_foreach_step_is_bit_exact(shape_list, steps, seed, lr):
    initial = initial_tensors(shape_list, seed)
    reference, reference_optimizer = run("single", initial, steps, seed, lr)
    parameters, optimizer = run("foreach", initial, steps, seed, lr)
    assert_same_bits(reference, parameters, reference_optimizer, optimizer)


def test_foreach_step_with_parameters_at_different_steps():
    """A parameter without a gradient is skipped (its step count falls behind): per-parameter scalars."""
    initial = initial_tensors([(4, 3), (5,), (2, 2)])
    skip = {(0, 1), (1, 1), (3, 2)}
    reference, reference_optimizer = run("single", initial, 12, skip=skip)
    parameters, optimizer = run("foreach", initial, 12, skip=skip)
    assert len({float(optimizer.state[p]["step"]) for p in parameters}) == 3
    assert_same_bits(reference, parameters, reference_optimizer, optimizer)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\(\)`")
def test_state_dict_is_nadams():
    """Checkpoints of either implementation resume in the other, and continue bit for bit."""
    initial = initial_tensors([(3, 4), (6,)])
    whole, whole_optimizer = run("single", initial, 10)
    parameters, optimizer = run("foreach", initial, 4)
    state = optimizer.state_dict()
    plain = torch.optim.NAdam([torch.nn.Parameter(p.detach().clone()) for p in parameters], lr=0.05,
                              betas=(0.9, 0.999), eps=1e-7, momentum_decay=1.0, foreach=False)
    plain.load_state_dict(state)  # NAdam reads KerasNadam's state as its own
    assert plain.state_dict()["state"].keys() == state["state"].keys()
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in parameters]
    optimizer = KerasNadam(resumed, lr=0.05, betas=(0.9, 0.999), eps=1e-7)
    optimizer.load_state_dict(state)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 0.7 ** (k / 3))
    for _ in range(4):
        scheduler.step()
    generator = torch.Generator().manual_seed(1)
    for step in range(10):
        gradients = [torch.randn(p.shape, generator=generator) for p in resumed]
        if step < 4:
            continue  # the first run took these
        for parameter, gradient in zip(resumed, gradients):
            parameter.grad = gradient
        optimizer.step()
        scheduler.step()
    for expected, actual in zip(whole, resumed):
        assert torch.equal(expected, actual)


def test_bit_exact_comparison_catches_a_reordered_update():
    """The check above fails for an update that computes the same formula in another order:
    torch's own foreach NAdam (why KerasNadam has its own), and an epsilon moved inside the root."""
    initial = initial_tensors([(8, 5), (7,), (3, 3)])
    reference, _ = run("single", initial, 20)
    torch_foreach, _ = run("", initial, 20, make=lambda ps: torch.optim.NAdam(
        ps, lr=0.05, betas=(0.9, 0.999), eps=1e-7, momentum_decay=1.0, foreach=True))
    assert not all(torch.equal(a, b) for a, b in zip(reference, torch_foreach))
    # The same formula to within float32 rounding, so only a bit-exact check can tell them apart.
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(reference, torch_foreach))


def test_planted_epsilon_bug_is_caught(monkeypatch):
    initial = initial_tensors([(4, 4), (3,)])
    reference, _ = run("single", initial, 5)
    original = optim.foreach_update

    def eps_inside_root(params, grads, exp_avgs, exp_avg_sqs, bc2, grad_step, average_step, omb1, beta2, eps):
        original(params, grads, exp_avgs, exp_avg_sqs, bc2, grad_step, average_step, omb1, beta2, eps * 1.5)

    monkeypatch.setattr(optim, "foreach_update", eps_inside_root)
    planted, _ = run("foreach", initial, 5)
    assert not all(torch.equal(a, b) for a, b in zip(reference, planted))


def test_unknown_implementation_is_refused():
    with pytest.raises(ValueError, match="one of"):
        KerasNadam([torch.nn.Parameter(torch.zeros(2))], lr=0.1, betas=(0.9, 0.999), eps=1e-7,
                   implementation="fused")


def ulps(expected: torch.Tensor, actual: torch.Tensor) -> float:
    """Largest difference in units of the last place of the tensor's largest magnitude."""
    scale = torch.finfo(expected.dtype).eps * float(expected.abs().max().clamp_min(torch.finfo(expected.dtype).tiny))
    return float((expected - actual).abs().max()) / scale


@pytest.mark.slow
@pytest.mark.parametrize("shape_list", [[(3, 5), (7,), (64, 33), (1,), (128,)], [(2, 2, 3), (40,)]])
def test_compiled_step_within_stated_ulps(shape_list):
    """50 steps of the compiled step against the reference; measured 0.1-0.5 ulp on this CPU."""
    initial = initial_tensors(shape_list)
    reference, _ = run("single", initial, 50)
    parameters, _ = run("compiled", initial, 50)
    worst = max(ulps(a.detach(), b.detach()) for a, b in zip(reference, parameters))
    print(f"compiled vs reference after 50 steps: {worst:.2f} ulp")
    assert worst <= MAX_COMPILED_ULPS
