"""Which legacy variables receive a gradient, per execution mode.

Modes:
    eager       `tf.GradientTape` around an eager forward pass.
    graph       the same step inside `tf.function` (what `fit` runs).
    fit         one real `fit` step; the names come from the "Gradients do not
                exist" warning TensorFlow logs, captured with a logging handler.
    fit_eager   the same with `run_eagerly=True`.

See legacy_keras/README.md for why the answers differ.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from legacy_keras._tf import tf
from legacy_keras.build import compile_like_original, total_loss

MODES = ("eager", "graph", "fit", "fit_eager")

WARNING_TEXT = "Gradients do not exist for variables"
_NAMES = re.compile(r"'([^']+)'")


@dataclass(frozen=True)
class GradientReport:
    """Result of one gradient probe.

    Attributes:
        mode: one of MODES.
        missing: variables whose gradient is None (the warning's list), in
            `trainable_variables` order.
        zero: variables whose gradient exists but is all zeros; None in the
            fit modes, where only the warning is observable.
        variables: every trainable variable's name, in order.
    """

    mode: str
    missing: tuple[str, ...]
    zero: Optional[tuple[str, ...]]
    variables: tuple[str, ...]


class _WarningCatcher(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.lists: list[list[str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if WARNING_TEXT not in str(record.msg):
            return
        if record.args and isinstance(record.args[0], (list, tuple)):
            self.lists.append([str(name) for name in record.args[0]])
        else:
            self.lists.append(_NAMES.findall(record.getMessage()))


@contextmanager
def capture_missing_gradient_warnings() -> Iterator[list[list[str]]]:
    """Collects every "Gradients do not exist" warning logged meanwhile.

    The warning is logged by tf-keras on the `tensorflow` Python logger; the
    handler is added beside the existing ones, so the warning still prints.

    Yields:
        A list that fills with one list of variable names per warning.
    """
    catcher = _WarningCatcher()
    logger = logging.getLogger("tensorflow")
    with _warnings_reach(logger):
        logger.addHandler(catcher)
        try:
            yield catcher.lists
        finally:
            logger.removeHandler(catcher)


@contextmanager
def _warnings_reach(logger: logging.Logger) -> Iterator[None]:
    """A logger silenced above WARNING (`qarac-parity` sets TensorFlow's to ERROR) would drop the
    warning before any handler sees it: for the block, the logger passes warnings on while its own
    handlers, and its parents', keep the silence they had."""
    silenced_at = logger.getEffectiveLevel()
    if silenced_at <= logging.WARNING:
        yield
        return
    handlers = list(logger.handlers)
    saved = (logger.level, logger.propagate, [handler.level for handler in handlers])
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    for handler in handlers:
        handler.setLevel(max(handler.level, silenced_at))
    try:
        yield
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        for handler, level in zip(handlers, saved[2]):
            handler.setLevel(level)


def tape_outputs_and_gradients(trainer, batch, targets, training: bool):
    """The trainer's outputs and the total loss's gradients with respect to every trainable variable
    (None: unconnected), from one taped call."""
    with tf.GradientTape() as tape:
        outputs = trainer(batch, training=training)
        loss = total_loss(outputs, targets)
    return outputs, tape.gradient(loss, trainer.trainable_variables)


def tape_gradients(trainer, batch, targets, training: bool):
    """The total loss's gradients with respect to every trainable variable (None: unconnected)."""
    return tape_outputs_and_gradients(trainer, batch, targets, training)[1]


def gradient_report(trainer, batch, targets, mode: str = "eager", training: bool = True,
                    trace_once: bool = False, restore: bool = True) -> GradientReport:
    """Probes which trainable variables of `trainer` receive a gradient.

    Args:
        trainer: a built `QaracTrainerModel`.
        batch, targets: as from `legacy_keras.build.synthetic_batch`.
        mode: one of MODES.
        training: dropout on (as in `fit`) for the tape modes.
        trace_once: fit modes: create the variables `fit` creates in its first step (the
            optimiser's slots, the compiled loss's metrics) before it. TensorFlow traces a
            function that creates variables on its first call twice; this way `fit` traces its
            step once (half the time on roberta-base shapes) and the warning, raised while
            tracing, names the same variables.
        restore: fit modes: put the weights back after the step (a copy of them meanwhile).

    The fit modes run one optimiser step and then (with `restore`) restore the
    weights, so the trainer is left as it was (the optimiser state is not restored).

    Raises:
        ValueError: on an unknown mode.
    """
    names = tuple(variable.name for variable in trainer.trainable_variables)
    if mode in ("eager", "graph"):
        step = tape_gradients if mode == "eager" else tf.function(tape_gradients)
        gradients = step(trainer, batch, targets, training)
        missing = tuple(name for name, grad in zip(names, gradients) if grad is None)
        zero = tuple(
            name
            for name, grad in zip(names, gradients)
            if grad is not None and not np.any(tf.convert_to_tensor(grad).numpy())
        )
        return GradientReport(mode, missing, zero, names)
    if mode in ("fit", "fit_eager"):
        saved = trainer.get_weights() if restore else None
        run_eagerly = mode == "fit_eager"
        if not getattr(trainer, "_is_compiled", False) or bool(trainer.run_eagerly) != run_eagerly:
            compile_like_original(trainer, run_eagerly=run_eagerly)
        batch_size = int(next(iter(batch.values()))["input_ids"].shape[0])
        if trace_once:
            trainer.optimizer.build(trainer.trainable_variables)
            trainer.compiled_loss.build(targets)  # one metric per output, from the targets' structure
        try:
            with capture_missing_gradient_warnings() as warnings:
                trainer.fit(batch, targets, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
        finally:
            if saved is not None:
                trainer.set_weights(saved)
        missing = tuple(dict.fromkeys(name for names_ in warnings for name in names_))
        return GradientReport(mode, missing, None, names)
    raise ValueError(f"unknown mode {mode!r}; choose one of {list(MODES)}")


def missing_gradients(trainer, batch, targets, mode: str = "eager") -> list[str]:
    """Names of the trainable variables that get no gradient (None) in `mode`."""
    return list(gradient_report(trainer, batch, targets, mode).missing)
