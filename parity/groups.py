"""Parameter groups: the layers a reader thinks in, named from PyTorch parameter names.

Both frameworks' parameters are grouped through their PyTorch names (the weight
bridge maps the legacy names there), so a reachability matrix or a gradient
plot lines the two up row by row.
"""

from __future__ import annotations

import re

# (pattern on the PyTorch name, group label); first match wins. `{0}` takes the layer number.
GROUP_RULES: tuple[tuple[str, str], ...] = (
    (r"^question_encoder\.encoder\.pooler\.", "encoder base: pooler"),
    (r"^question_encoder\.encoder\.embeddings\.", "encoder base: embeddings"),
    (r"^question_encoder\.encoder\.encoder\.layer\.(\d+)\.", "encoder base: layer {0}"),
    (r"^question_encoder\.head\.(\w+)_projection$", "question encoder head: {0} projection"),
    (r"^answer_encoder\.head\.(\w+)_projection$", "answer encoder head: {0} projection"),
    (r"^decoder\.decoder\.pooler\.", "decoder base: pooler"),
    (r"^decoder\.decoder\.embeddings\.", "decoder base: embeddings"),
    (r"^decoder\.decoder\.encoder\.layer\.(\d+)\.", "decoder base: layer {0}"),
    (r"^decoder\.decoder_head\.layer_(\d+)\.", "decoder head: layer_{0}"),
    (r"^decoder\.decoder_head\.head\.", "decoder head: LM head"),
)


def parameter_group(name: str) -> str:
    """The group of a (canonical) PyTorch parameter name of QaracTrainerModel."""
    for pattern, label in GROUP_RULES:
        match = re.match(pattern, name)
        if match:
            return label.format(*match.groups())
    raise KeyError(f"parameter {name!r} belongs to no group of parity.groups.GROUP_RULES")


def group_order(group: str) -> tuple[int, int, str]:
    """Sort key putting groups in model order (rule order, then layer number)."""
    rule = next(i for i, (_, label) in enumerate(GROUP_RULES) if group.startswith(label.split("{")[0]))
    number = re.findall(r"\d+$", group)
    return rule, int(number[0]) if number else -1, group


def ordered_groups(names) -> list[str]:
    """Groups of the parameter `names`, in model order."""
    return sorted({parameter_group(name) for name in names}, key=group_order)
