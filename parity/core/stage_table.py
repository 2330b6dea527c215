"""The stages a pair compares: the spec's own, or one per layer derived from the weight map."""

from __future__ import annotations

from parity.core.results import StageSite
from parity.core.spec import Pair
from parity.core.weights import Matched


def stage_sites(pair: Pair, matched: Matched) -> list[StageSite]:
    """The stages in execution order: `pair.stages`, else per mapped layer in table order: the Keras
    layer is a variable's first name segment, the torch module the key's owner (`lstm.weight_ih_l0`
    -> `lstm`)."""
    if pair.stages is not None:
        return [StageSite(stage.name, stage.keras, stage.torch) for stage in pair.stages]
    sites: dict[str, StageSite] = {}
    for entry in matched.entries:
        layer = entry.keras[0].split("/", 1)[0]
        module = entry.torch[0].rpartition(".")[0]
        sites.setdefault(layer, StageSite(layer, layer, module))
    return list(sites.values())
