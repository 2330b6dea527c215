"""QARAC training step on a CUDA GPU (meant for an H100): throughput, MFU, memory,
the levers that move them, and the CUDA port's agreement with the CPU port.

What: the whole PyTorch training step (forward of the four objectives,
loss, backward, NAdam step, zero_grad) at roberta-base shapes with random
weights, 16 examples per objective, every field 128 tokens. Each *variant* sets:
  precision     fp32 (TF32 matmuls off, read back) or bf16 (`torch.autocast`);
  compile       none; "loss" (forward + loss under `torch.compile`, the backward
                AOT-compiled with it); "step" ("loss" plus the optimizer step
                compiled, which fuses NAdam's per-parameter loops into a few
                kernels); "step-cudagraphs" ("step" with mode="reduce-overhead",
                CUDA graphs replaying forward and backward);
  optimizer     "single" (per-parameter loop, as `qarac train` runs it),
                "foreach" (torch's multi-tensor kernels);
  examples      examples per objective (16, 32, 64);
  sdpa          the scaled-dot-product-attention backend forced (flash,
                efficient, cudnn, math), or the default dispatch.
Reported per variant: ms/step, examples/s (an example is one row of each of
the four corpora), tokens/s (every token position, padding included, that goes
through a base model: 7 encoder inputs and 2 decoder seeds per example),
achieved TFLOP/s, MFU and peak memory; a variant that fails records its error.

FLOPs per step (model FLOPs, training = 3 x forward, padding counted as work):
    6 * P_linear * tokens   for every base and head forward the step does:
        encoder base   P = the linear weights of its 12 layers, tokens = 7 * B * T
                       (question, all_text, answer, proposition0/1, statement0/1);
        pooling heads  P = H*H (local projection) per token, 7 * B * T;
                       the global projection, H*H per sequence, 7 * B;
        decoder base   P = its 12 layers' linear weights, tokens = 2 * B * T;
        decoder head   layer_0 on 2 * B * (T + 1) tokens, layer_1, the LM dense
                       and the tied V*H output matrix on 2 * B * T tokens;
  + 12 * layers * B * T^2 * H  attention scores and mixing, for each stack:
        12 encoder layers over 7B sequences, 12 decoder layers over 2B, and
        the decoder head's two layers over 2B (lengths T + 1 and T).
Embedding lookups, layer norms, softmax and the optimizer are not counted.
MFU = achieved FLOP/s / 989 TFLOP/s (H100 SXM dense bf16 peak; fp32 rows are
quoted against the same peak, as the issue's reference numbers are).

How: one model; a fresh optimizer per variant; warm-up steps (compilation
included, reported separately) untimed; then `--steps` steps timed between two
`torch.cuda.synchronize()` calls, with no host-device sync inside the loop
(`qarac.validation.skip_value_checks()`; losses are not read back).
`--profile` adds, after each variant's timing, one short `torch.profiler` window that
splits its GPU time into GEMMs, attention, optimizer, elementwise and other
kernels, and the step's wall time into GPU-busy and idle (launch-bound) parts.
`--agreement` compares the CUDA port with the CPU port on the same weights and
batch (eval mode, dropout off): every trainer output and the total loss, in
fp32 with TF32 off (read back), with TF32 on, and under bf16 autocast.

Results are written after every variant (atomically), so a run cut short by
`--budget-s` or a time limit keeps what it measured.

Without CUDA it prints that it needs a GPU and exits 0, writing nothing.
`--device cpu` runs the same code for a smoke test, also writing nothing.

Run: .venv/bin/python -m bench.gpu_trainer_step
Writes bench/results/gpu_trainer_step.json (CUDA only; `--results PATH` elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from bench.common import RESULTS_DIR, machine, print_table, trainer_batch
from qarac import QaracConfig, QaracLoss, QaracTrainerModel
from qarac.batch import TokenBatch
from qarac.presets import PRESETS
from qarac.validation import skip_value_checks

PEAK_TFLOPS = 989.0  # H100 SXM, dense bf16 tensor cores
ENCODER_INPUTS = 7  # question + six answer-encoder inputs
DECODER_INPUTS = 2  # offset_text, conclusion_offset
COMPILE_MODES = ("none", "loss", "step", "step-cudagraphs")


@dataclass(frozen=True)
class Variant:
    """One configuration of the training step (see the module docstring)."""

    precision: str = "bf16"
    compile: str = "none"
    optimizer: str = "foreach"
    examples: int = 16
    sdpa: str | None = None

    @property
    def name(self) -> str:
        parts = [self.precision, f"compile={self.compile}", f"opt={self.optimizer}", f"B={self.examples}"]
        if self.sdpa:
            parts.append(f"sdpa={self.sdpa}")
        return " ".join(parts)


def plan(examples: int, quick: bool) -> list[Variant]:
    """The variants of a full run, in the order they are measured (cheapest levers first)."""
    variants = [
        Variant("fp32", "none", "single", examples),
        Variant("fp32", "none", "foreach", examples),
        Variant("bf16", "none", "single", examples),
        Variant("bf16", "none", "foreach", examples),
        *[Variant("bf16", "none", "foreach", examples, backend) for backend in ("flash", "efficient", "cudnn")],
        Variant("bf16", "loss", "foreach", examples),
        Variant("bf16", "step", "foreach", examples),
        Variant("bf16", "none", "foreach", 2 * examples),
        Variant("bf16", "none", "foreach", 4 * examples),
        Variant("bf16", "step", "foreach", 4 * examples),
        Variant("bf16", "step-cudagraphs", "foreach", examples),
        Variant("bf16", "step-cudagraphs", "foreach", 4 * examples),
    ]
    return variants[:4] if quick else variants


def linear_weights(module: torch.nn.Module) -> int:
    """Elements of every nn.Linear weight under `module` (a tied weight counted where it is applied)."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


def step_flops(model: QaracTrainerModel, batch: int, length: int) -> dict[str, float]:
    """Model FLOPs of one training step; see the module docstring for the formula."""
    config = model.config
    hidden, layers = config.hidden_size, int(config.base["num_hidden_layers"])
    encoder_tokens, decoder_tokens = ENCODER_INPUTS * batch * length, DECODER_INPUTS * batch * length
    head = model.decoder.decoder_head
    linear = {
        "encoder_base": linear_weights(model.answer_encoder.encoder.encoder) * encoder_tokens,
        "pooling_heads": hidden * hidden * (encoder_tokens + ENCODER_INPUTS * batch),
        "decoder_base": linear_weights(model.decoder.decoder.encoder) * decoder_tokens,
        "decoder_head": linear_weights(head.layer_0) * DECODER_INPUTS * batch * (length + 1)
                        + (linear_weights(head.layer_1) + linear_weights(head.head)) * decoder_tokens,
    }
    flops = {name: 6.0 * value for name, value in linear.items()}
    flops["attention"] = 12.0 * hidden * (layers * ENCODER_INPUTS * batch * length ** 2
                                          + layers * DECODER_INPUTS * batch * length ** 2
                                          + DECODER_INPUTS * batch * ((length + 1) ** 2 + length ** 2))
    flops["total"] = sum(flops.values())
    return flops


def to_device(tree: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {name: value.to(device, non_blocking=True) for name, value in tree.items()}


def set_tf32(enabled: bool) -> dict[str, Any]:
    """Set TF32 for matmuls and cuDNN, and read back what torch now uses."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    return {"cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


def sdpa_context(backend: str | None):
    if backend is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    names = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
             "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    return sdpa_kernel([names[backend]])


def make_step(model: QaracTrainerModel, inputs, targets, variant: Variant,
              device: torch.device) -> Callable[[], None]:
    """forward, loss, backward, NAdam (Keras' Nadam settings), zero_grad, as `variant` says."""
    # Keras' Nadam as `qarac.training.optimizer.make_optimizer` sets it; only the kernel choice varies here.
    optimizer = torch.optim.NAdam(model.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-7,
                                  momentum_decay=1.0, foreach=variant.optimizer == "foreach")
    loss_fn = QaracLoss(model.config)

    def loss(inputs: dict[str, TokenBatch], targets: dict[str, Any]) -> torch.Tensor:
        return loss_fn(model(inputs), targets).total

    forward = loss
    optimizer_step = optimizer.step
    if variant.compile != "none":
        mode = "reduce-overhead" if variant.compile == "step-cudagraphs" else None
        forward = torch.compile(loss, mode=mode)
    if variant.compile.startswith("step"):
        optimizer_step = torch.compile(optimizer.step)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant.precision == "bf16")

    def step() -> None:
        with skip_value_checks(), autocast, sdpa_context(variant.sdpa):
            total = forward(inputs, targets)
        total.backward()
        optimizer_step()
        optimizer.zero_grad(set_to_none=True)

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> tuple[float, float]:
    """(warm-up seconds, seconds per timed step)."""
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return warmup_s, (time.perf_counter() - start) / steps


def run_variant(model: QaracTrainerModel, variant: Variant, device: torch.device, args) -> dict[str, Any]:
    """Measure one variant; an error (no kernel for a forced backend, out of memory) is recorded, not raised."""
    torch.manual_seed(0)
    inputs, targets = trainer_batch(variant.examples, args.length, model.config.vocab_size)
    inputs, targets = to_device(inputs, device), to_device(targets, device)
    flops = step_flops(model, variant.examples, args.length)["total"]
    tokens = (ENCODER_INPUTS + DECODER_INPUTS) * variant.examples * args.length
    row: dict[str, Any] = {"variant": variant.name, **dataclasses.asdict(variant),
                           "flops_per_step": flops, "tf32": set_tf32(False)}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch._dynamo.reset()
    try:
        step = make_step(model, inputs, targets, variant, device)
        warmup = args.warmup + (2 if variant.compile != "none" else 0)
        warmup_s, seconds = measure(step, device, warmup, args.steps)
        if args.profile:
            row["profile"] = profile_step(step, device)
    except Exception as error:  # noqa: BLE001  (every failure of a lever is a finding to record)
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
        model.zero_grad(set_to_none=True)
        return row
    finally:
        del inputs, targets
    achieved = flops / seconds / 1e12
    row.update({"ms_per_step": seconds * 1e3, "examples_per_s": variant.examples / seconds,
                "tokens_per_s": tokens / seconds, "tflops": achieved, "mfu": achieved / PEAK_TFLOPS,
                "warmup_s": warmup_s, "warmup_steps": warmup, "timed_steps": args.steps,
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None})
    return row


# First match wins. Compiled optimizer kernels are Triton "foreach" kernels (triton_for_...);
# the other Triton kernels are the compiled forward/backward's fused elementwise work.
KERNEL_CLASSES = (
    ("optimizer", ("multi_tensor", "nadam", "triton_for_", "_foreach_")),
    ("attention", ("fmha", "flash", "attention", "efficient_attention", "cudnn_sdpa", "sdpa")),
    ("gemm", ("gemm", "cutlass", "sm90_xmma", "xmma", "cublas", "matmul", "splitk", "nvjet")),
    ("elementwise", ("elementwise", "vectorized", "reduce", "triton", "softmax", "layer_norm", "dropout",
                     "gelu", "copy", "fill", "index", "embedding", "cat", "where")),
)


def _is_annotation(event: Any) -> bool:
    return bool(getattr(event, "is_user_annotation", False)) or event.name.startswith(("Optimizer.", "ProfilerStep"))


def classify(kernel: str) -> str:
    lowered = kernel.lower()
    for name, needles in KERNEL_CLASSES:
        if any(needle in lowered for needle in needles):
            return name
    return "other"


def profile_step(step: Callable[[], None], device: torch.device, steps: int = 2) -> dict[str, Any]:
    """A short torch.profiler window over a warmed-up step: GPU time per kernel class, kernel
    launches, and the share of the wall time the GPU is busy (the rest is launch/host bound)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        wall_s = (time.perf_counter() - start) / steps
    kernels: dict[str, float] = {}
    launches = 0
    for event in prof.events():
        # GPU-side ranges of user annotations (e.g. "Optimizer.step#NAdam.step") span kernels
        # that are counted on their own: skip them.
        if event.device_type == torch.autograd.DeviceType.CUDA and not _is_annotation(event):
            kernels[event.name] = kernels.get(event.name, 0.0) + event.device_time / 1e3 / steps  # ms/step
            launches += 1
    by_class: dict[str, float] = {}
    for name, ms in kernels.items():
        by_class[classify(name)] = by_class.get(classify(name), 0.0) + ms
    gpu_ms = sum(kernels.values())
    top = sorted(kernels.items(), key=lambda item: -item[1])[:12]
    return {"wall_ms_per_step": wall_s * 1e3, "gpu_kernel_ms_per_step": gpu_ms,
            "gpu_busy_share": gpu_ms / (wall_s * 1e3), "kernel_launches_per_step": launches / steps,
            "ms_per_step_by_class": by_class, "top_kernels_ms_per_step": top}


def time_cuda(fn: Callable[[], Any], device: torch.device, repeats: int = 10) -> float:
    """Milliseconds per call of `fn` after two untimed calls."""
    for _ in range(2):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats * 1e3


def optimizer_costs(model: QaracTrainerModel, device: torch.device) -> dict[str, float]:
    """The NAdam step alone (Keras' settings), ms per step, on every parameter of the trainer:
    per-parameter loop, foreach kernels, and foreach under torch.compile; with the memory
    traffic floor (parameter, gradient and two moments read, three written, float32)."""
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter) * 1e-3
    result: dict[str, float] = {}
    for label, foreach, compiled in (("single", False, False), ("foreach", True, False),
                                     ("foreach+compile", True, True)):
        optimizer = torch.optim.NAdam(model.parameters(), lr=1e-9, betas=(0.9, 0.999), eps=1e-7,
                                      momentum_decay=1.0, foreach=foreach)
        step = torch.compile(optimizer.step) if compiled else optimizer.step
        torch._dynamo.reset()
        result[label] = time_cuda(step, device)
        del optimizer
    elements = sum(parameter.numel() for parameter in model.parameters())
    peak_bytes_per_s = 3.35e12  # H100 SXM HBM3
    result["parameters"] = elements
    result["bandwidth_floor_ms"] = elements * 4 * 7 / peak_bytes_per_s * 1e3
    model.zero_grad(set_to_none=True)
    return result


def vocab_matmul_costs(model: QaracTrainerModel, device: torch.device, examples: int, length: int) -> dict[str, Any]:
    """The LM head's output product (2 decoder inputs x B x T tokens, H) @ (H, V), forward and
    backward in bf16, at the vocabulary as it is (50265, not a multiple of 8) and padded to 50304."""
    hidden = model.config.hidden_size
    rows = DECODER_INPUTS * examples * length
    result: dict[str, Any] = {"rows": rows}
    for vocab in (model.config.vocab_size, -(-model.config.vocab_size // 64) * 64):
        x = torch.randn(rows, hidden, device=device, dtype=torch.bfloat16, requires_grad=True)
        w = torch.randn(vocab, hidden, device=device, dtype=torch.bfloat16, requires_grad=True)

        def forward_backward() -> None:
            (x @ w.t()).sum().backward()

        ms = time_cuda(forward_backward, device)
        result[str(vocab)] = {"ms": ms, "tflops": 6 * rows * hidden * vocab / ms / 1e9}
    return result


def max_differences(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Per output: max |a - b| and the largest |reference| (for scale)."""
    result = {}
    for name, value in reference.items():
        difference = (value.double() - other[name].detach().cpu().double()).abs()
        result[name] = {"max_abs_diff": float(difference.max()), "max_abs_value": float(value.abs().max())}
    return result


def agreement(model: QaracTrainerModel, device: torch.device, args) -> dict[str, Any]:
    """The CUDA port against the CPU port: same weights, same batch, eval mode (dropout off)."""
    cpu_model = QaracTrainerModel(model.config)
    cpu_model.load_state_dict({name: tensor.detach().cpu() for name, tensor in model.state_dict().items()})
    cpu_model.eval()
    model.eval()
    inputs, targets = trainer_batch(args.agreement_examples, args.length, model.config.vocab_size, seed=1)
    loss_fn = QaracLoss(model.config)

    def outputs(module: QaracTrainerModel, inputs, targets) -> dict[str, torch.Tensor]:
        result = module(inputs)
        values = result.as_dict()
        values["total_loss"] = loss_fn(result, targets).total.reshape(1)
        return {name: value.float() for name, value in values.items()}

    with torch.no_grad():
        start = time.perf_counter()
        reference = outputs(cpu_model, inputs, targets)
        cpu_s = time.perf_counter() - start
        cuda_inputs, cuda_targets = to_device(inputs, device), to_device(targets, device)
        report: dict[str, Any] = {"examples": args.agreement_examples, "tokens_per_field": args.length,
                                  "cpu_forward_s": cpu_s, "cpu_threads": torch.get_num_threads()}
        for label, tf32, bf16 in (("fp32_tf32_off", False, False), ("fp32_tf32_on", True, False),
                                  ("bf16_autocast", False, True)):
            flags = set_tf32(tf32)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                result = outputs(model, cuda_inputs, cuda_targets)
            report[label] = {"tf32_read_back": flags, "differences": max_differences(reference, result)}
    set_tf32(False)
    model.train()
    return report


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def versions() -> dict[str, str]:
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": str(torch.version.cuda),
            "cudnn": str(torch.backends.cudnn.version()), "transformers": transformers.__version__}


def print_rows(title: str, rows: list[dict[str, Any]]) -> None:
    print_table(title, ["variant", "ms/step", "examples/s", "tokens/s", "TFLOP/s", "MFU %", "peak GiB"],
                [(r["variant"], r["ms_per_step"], r["examples_per_s"], r["tokens_per_s"], r["tflops"],
                  100 * r["mfu"], r["peak_memory_gib"] if r["peak_memory_gib"] is not None else "-")
                 if "error" not in r else (r["variant"], r["error"][:60], "", "", "", "", "")
                 for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="roberta-base", choices=sorted(PRESETS))
    parser.add_argument("--examples", type=int, default=16, help="examples per objective (the base of the plan)")
    parser.add_argument("--length", type=int, default=128, help="tokens per field")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="only the four eager fp32/bf16 variants")
    parser.add_argument("--profile", action="store_true",
                        help="after timing each variant, profile two more steps (kernel classes, GPU-busy share)")
    parser.add_argument("--agreement", action="store_true", help="compare the CUDA port with the CPU port")
    parser.add_argument("--agreement-examples", type=int, default=4)
    parser.add_argument("--only", nargs="+", default=None,
                        help="run only the planned variants whose name contains one of these strings (all must match one)")
    parser.add_argument("--costs", action="store_true",
                        help="also time the optimizer step alone and the LM head's vocabulary product")
    parser.add_argument("--budget-s", type=float, default=float("inf"),
                        help="start no new variant after this many seconds")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke test")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR / "gpu_trainer_step.json")
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/gpu_trainer_step.py needs a CUDA GPU (meant for an H100) and none is visible; "
              "nothing measured, nothing written.")
        return 0
    began = time.perf_counter()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = QaracTrainerModel(QaracConfig(base=PRESETS[args.preset])).to(device).train()
    payload: dict[str, Any] = {
        "machine": machine(), "versions": versions(), "preset": args.preset,
        "examples_per_objective": args.examples, "tokens_per_field": args.length,
        "flops_per_step": step_flops(model, args.examples, args.length), "peak_tflops": PEAK_TFLOPS,
        "results": [], "skipped": [], "cuda_vs_cpu": None, "note": args.note,
        "command": "python -m bench.gpu_trainer_step " + " ".join(sys.argv[1:] if argv is None else argv)}
    write = (lambda: write_json(args.results, payload)) if device.type == "cuda" else (lambda: None)
    if args.agreement:
        payload["cuda_vs_cpu"] = agreement(model, device, args)
        print(json.dumps(payload["cuda_vs_cpu"], indent=1, default=str))
        write()
    if args.costs:
        payload["optimizer_ms"] = optimizer_costs(model, device)
        payload["vocab_matmul"] = vocab_matmul_costs(model, device, args.examples, args.length)
        print(json.dumps({"optimizer_ms": payload["optimizer_ms"], "vocab_matmul": payload["vocab_matmul"]}, indent=1))
        write()
    variants = plan(args.examples, args.quick)
    if args.only:
        variants = [v for v in variants if all(part in v.name for part in args.only)]
    for variant in variants:
        if time.perf_counter() - began > args.budget_s:
            payload["skipped"].append(variant.name)
            continue
        row = run_variant(model, variant, device, args)
        payload["results"].append(row)
        print(f"[{time.perf_counter() - began:6.0f} s] {variant.name}: "
              + (row["error"] if "error" in row else f"{row['ms_per_step']:.1f} ms/step, MFU {100 * row['mfu']:.1f} %")
              + (f", GPU busy {100 * row['profile']['gpu_busy_share']:.0f} %, "
                 f"{json.dumps({k: round(v, 1) for k, v in row['profile']['ms_per_step_by_class'].items()})}"
                 if "profile" in row else ""),
              flush=True)
        write()
    print_rows(f"QARAC training step, {args.preset}, {args.length} tokens/field", payload["results"])
    if device.type != "cuda":
        print("smoke run on CPU: nothing written")
        return 0
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
