"""Training QARAC, one concept a module: `config` (`TrainConfig`), `runtime` (one process or DDP
under torchrun), `build` (tokenizer, model, batches), `optimizer` (Keras' Nadam and
ExponentialDecay), `loss_step` (forward + loss, compiled or not), `rng`, `checkpoints`,
`history`, `run_dir` (the output directory), `run_lock` (one writer per directory), `resume`,
`signals` (stopping at a step boundary) and `loop` (`train`, which uses all of them)."""
