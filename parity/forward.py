"""Forward parity: the PyTorch legacy preset against the legacy Keras model,
output by output and stage by stage, from one real forward pass per side.

Both models hold the same weights (through `parity.bridge`) and run in eval
mode (PyTorch `eval()`, Keras `training=False`): no dropout. Each side runs the
trainer forward once per batch with its stages captured (`parity.stages`);
every output and stage comparison of that batch is made from those two
captures, so the legacy side's result is plain data (`Capture`) that a recorded
run could supply as well.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from parity.compare import Comparison, compare_arrays
from parity.stages import Capture, stage_site, stage_token_input
from parity.tolerance import TINY_TOLERANCE

# Outputs compared besides the trainer's four: each encoder's vector, read from its
# head's call on its own input in the trainer's forward.
ENCODER_OUTPUTS = {"question_encoder": "question encoder head: output (question)",
                   "answer_encoder": "answer encoder head: output (answer)"}
TOKEN_OUTPUTS = {"trainer.encode_decode": "offset_text", "trainer.reasoning": "conclusion_offset"}


def _mask(tokens) -> np.ndarray:
    return tokens.attention_mask.numpy()


def output_arrays(capture: Capture) -> dict[str, np.ndarray]:
    """The compared outputs of one captured forward, by name."""
    result = {name: capture.stage_outputs[stage] for name, stage in ENCODER_OUTPUTS.items()}
    result.update({f"trainer.{name}": value for name, value in capture.outputs.items()})
    return result


def stage_mask(stage: str, inputs: Mapping[str, Any]) -> np.ndarray | None:
    """(B, T) real-token mask of a stage's token axis; None for (B, H) vectors."""
    site = stage_site(stage)
    if site.endswith("head: output"):
        return None
    mask = _mask(inputs[stage_token_input(stage)])
    if site == "decoder head: layer_0":  # the vector is prepended as position 0
        mask = np.concatenate([np.ones_like(mask[:, :1]), mask], axis=1)
    return mask


@dataclass
class CaseResult:
    """One batch compared, from one forward pass per side.

    Attributes:
        case: the batch's name (`padded`, `unpadded`, ...).
        outputs: comparison per output, named `case.output`.
        stages: comparison per stage (the error accumulated up to it), in execution order.
        first_failure: the first stage over tolerance, or None.
        unlocated: outputs over tolerance although no stage is: the difference enters
            in glue the stages do not cover, and localisation has failed.
    """

    case: str
    outputs: list[Comparison] = field(default_factory=list)
    stages: list[Comparison] = field(default_factory=list)
    first_failure: str | None = None
    unlocated: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _judged(comparison: Comparison, key: str, floors: Mapping[str, float] | None,
            bound: float | None) -> Comparison:
    """Attach the noise floor and the error in floor units; with `bound`, judge in those units."""
    if floors is None or comparison.problem:
        return comparison
    floor = floors[key]
    comparison.noise_floor = floor
    # A floor of exactly 0 (a value identically 0 in both legacy runs and the port's variants): equal
    # values are 0 floors away, any error infinitely many.
    comparison.floor_ratio = (comparison.max_abs_err / floor if floor > 0
                              else 0.0 if comparison.max_abs_err == 0 else float("inf"))
    if bound is not None:
        comparison.tolerance = bound * floor
        comparison.passed = comparison.max_abs_err <= comparison.tolerance
    return comparison


def compare_captures(pt: Capture, legacy: Capture, inputs: Mapping[str, Any], case: str,
                     tolerance: float = TINY_TOLERANCE, floors: Mapping[str, float] | None = None,
                     bound: float | None = None) -> CaseResult:
    """Compare two captured forwards of the same batch: outputs, then every stage.

    Args:
        tolerance: absolute tolerance, used when `bound` is None.
        floors: noise floor per value (`output:<name>` or stage name), see `parity.noise`.
        bound: judge each value against `bound` times its floor instead of `tolerance`.
    """
    result = CaseResult(case)
    pt_out, legacy_out = output_arrays(pt), output_arrays(legacy)
    for name in legacy_out:
        token = TOKEN_OUTPUTS.get(name)
        mask = _mask(inputs[token]) if token else None
        comparison = compare_arrays(f"{case}.{name}", pt_out[name], legacy_out[name], tolerance, mask)
        result.outputs.append(_judged(comparison, f"output:{name}", floors, bound))
    if pt.order != legacy.order:
        raise ValueError(f"the two forwards ran different stages: {pt.order} vs {legacy.order}")
    for stage in legacy.order:
        comparison = compare_arrays(stage, pt.stage_outputs[stage], legacy.stage_outputs[stage], tolerance,
                                    stage_mask(stage, inputs))
        result.stages.append(_judged(comparison, stage, floors, bound))
        if not comparison.passed and result.first_failure is None:
            result.first_failure = stage
    if result.first_failure is None:
        result.unlocated = [c.name for c in result.outputs if not c.passed]
    return result


def introduced_errors(fed: Capture, legacy: Capture, inputs: Mapping[str, Any],
                      tolerance: float = TINY_TOLERANCE, floors: Mapping[str, float] | None = None,
                      bound: float | None = None) -> list[Comparison]:
    """Each stage fed the legacy's own input to it: the error the stage introduces by itself.

    Args:
        fed: the port's forward in which every stage's primary input was replaced by the legacy's
            input to that stage (`parity.port_runner`); each stage's output is compared with the
            legacy's output of that stage.
    """
    return [_judged(compare_arrays(stage, fed.stage_outputs[stage], legacy.stage_outputs[stage], tolerance,
                                   stage_mask(stage, inputs)), stage, floors, bound) for stage in legacy.order]
