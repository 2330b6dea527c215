"""QARAC training step on a CUDA GPU (meant for an H100): throughput, MFU and memory.

What: the whole PyTorch training step (forward of the four objectives,
loss, backward, NAdam step, zero_grad) at roberta-base shapes with random
weights, 16 examples per objective, every field 128 tokens, in three modes:
  fp32          eager, float32 (TF32 matmuls off);
  bf16          eager under `torch.autocast("cuda", torch.bfloat16)`;
  bf16-compile  bf16 autocast with the forward and the loss under `torch.compile`.
Reported per mode: ms/step, examples/s (an example is one row of each of the
four corpora, as `qarac.data` builds them), tokens/s (every token position,
padding included, that goes through a base model: 7 encoder inputs and 2
decoder seeds per example), achieved TFLOP/s, MFU and peak memory.

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
MFU = achieved FLOP/s / 989 TFLOP/s (H100 SXM dense bf16 peak; the fp32 row is
quoted against the same peak, as the issue's reference numbers are).

How: one model, a fresh optimizer per mode; warm-up steps (compilation
included, reported separately) untimed; then `--steps` steps timed between two
`torch.cuda.synchronize()` calls, with no host-device sync inside the loop
(`qarac.validation.skip_value_checks()`; losses are not read back).

Without CUDA it prints that it needs a GPU and exits 0, writing nothing.
`--device cpu` runs the same code for a smoke test, also writing nothing.

Run: .venv/bin/python -m bench.gpu_trainer_step
Writes bench/results/gpu_trainer_step.json (CUDA only).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

import torch

from bench.common import print_table, trainer_batch, write_results
from qarac import QaracConfig, QaracLoss, QaracTrainerModel
from qarac.batch import TokenBatch
from qarac.presets import PRESETS
from qarac.validation import skip_value_checks

PEAK_TFLOPS = 989.0  # H100 SXM, dense bf16 tensor cores
MODES = ("fp32", "bf16", "bf16-compile")
ENCODER_INPUTS = 7  # question + six answer-encoder inputs
DECODER_INPUTS = 2  # offset_text, conclusion_offset


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


def make_step(model: QaracTrainerModel, inputs, targets, mode: str, device: torch.device) -> Callable[[], None]:
    """forward, loss, backward, NAdam (Keras' Nadam settings, foreach kernels), zero_grad."""
    optimizer = torch.optim.NAdam(model.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-7,
                                  momentum_decay=1.0, foreach=True)
    loss_fn = QaracLoss(model.config)

    def loss(inputs: dict[str, TokenBatch], targets: dict[str, Any]) -> torch.Tensor:
        return loss_fn(model(inputs), targets).total

    forward = torch.compile(loss) if mode.endswith("compile") else loss
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode.startswith("bf16"))

    def step() -> None:
        with skip_value_checks(), autocast:
            total = forward(inputs, targets)
        total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_mode(model, inputs, targets, mode: str, device: torch.device, warmup: int, steps: int,
             flops: float, batch: int, tokens: int) -> dict[str, Any]:
    step = make_step(model, inputs, targets, mode, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    achieved = flops / seconds / 1e12
    return {"mode": mode, "ms_per_step": seconds * 1e3, "examples_per_s": batch / seconds,
            "tokens_per_s": tokens / seconds, "tflops": achieved, "mfu": achieved / PEAK_TFLOPS,
            "warmup_s": warmup_s, "warmup_steps": warmup, "timed_steps": steps,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="roberta-base", choices=sorted(PRESETS))
    parser.add_argument("--examples", type=int, default=16, help="examples per objective")
    parser.add_argument("--length", type=int, default=128, help="tokens per field")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke test")
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/gpu_trainer_step.py needs a CUDA GPU (meant for an H100) and none is visible; "
              "nothing measured, nothing written.")
        return 0
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = QaracTrainerModel(QaracConfig(base=PRESETS[args.preset])).to(device).train()
    inputs, targets = trainer_batch(args.examples, args.length, model.config.vocab_size)
    inputs, targets = to_device(inputs, device), to_device(targets, device)
    flops = step_flops(model, args.examples, args.length)
    tokens = (ENCODER_INPUTS + DECODER_INPUTS) * args.examples * args.length
    results = [run_mode(model, inputs, targets, mode, device, args.warmup, args.steps, flops["total"],
                        args.examples, tokens) for mode in args.modes]
    print_table(f"QARAC training step, {args.preset}, {args.examples} examples/objective, {args.length} tokens/field, "
                f"{flops['total'] / 1e12:.2f} TFLOP/step",
                ["mode", "ms/step", "examples/s", "tokens/s", "TFLOP/s", "MFU %", "peak GiB"],
                [(r["mode"], r["ms_per_step"], r["examples_per_s"], r["tokens_per_s"], r["tflops"],
                  100 * r["mfu"], r["peak_memory_gib"] if r["peak_memory_gib"] is not None else "-")
                 for r in results])
    if device.type != "cuda":
        print("smoke run on CPU: nothing written")
        return 0
    path = write_results("gpu_trainer_step", {
        "preset": args.preset, "examples_per_objective": args.examples, "tokens_per_field": args.length,
        "flops_per_step": flops, "peak_tflops": PEAK_TFLOPS, "results": results, "note": args.note,
        "command": "python -m bench.gpu_trainer_step " + " ".join(sys.argv[1:] if argv is None else argv)})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
