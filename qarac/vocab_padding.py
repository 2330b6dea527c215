"""The LM head's vocabulary product padded to a multiple of 64 rows, in compute only.

cuBLAS runs the (tokens, H) @ (H, V) product of the tied output matrix at a
fraction of its speed when V is not a multiple of 8 (roberta-base: V = 50265,
6.79 ms against 1.91 ms at 50304 on an H100, bench/README.md section 4).
`PaddedVocabLinear` appends zero rows to the weight and bias for the product
only and cuts the logits back to V columns: the parameters (and so checkpoints),
the logits every caller sees and every loss stay those of the plain product.
The zero rows get no gradient (they are not parameters) and add nothing to the
input's gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qarac import _hf  # noqa: F401  (its RobertaLMHead import must not pull TensorFlow in)

# Tensor-core GEMM kernels want the inner dimensions a multiple of 8; 64 suits every tile size.
DEFAULT_MULTIPLE = 64


class PaddedVocabLinear(nn.Linear):
    """`nn.Linear(H, V)` whose product is computed with V rounded up to `multiple`.

    Holds the very `weight` and `bias` parameters of the layer it replaces
    (tied weights stay tied; state-dict names are unchanged).
    """

    multiple: int

    @classmethod
    def replacing(cls, layer: nn.Linear, multiple: int) -> "PaddedVocabLinear":
        padded = cls.__new__(cls)
        nn.Module.__init__(padded)
        padded.in_features, padded.out_features = layer.in_features, layer.out_features
        padded.weight, padded.bias = layer.weight, layer.bias
        padded.multiple = multiple
        return padded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., V) logits, a view of the (..., V_padded) product."""
        vocab = self.out_features
        extra = -vocab % self.multiple
        if extra == 0:
            return F.linear(x, self.weight, self.bias)
        weight = F.pad(self.weight, (0, 0, 0, extra))  # (V + extra, H), zero rows at the end
        bias = None if self.bias is None else F.pad(self.bias, (0, extra))
        return F.linear(x, weight, bias)[..., :vocab]


def pad_vocabulary_products(model: nn.Module, multiple: int = DEFAULT_MULTIPLE) -> int:
    """Make every RoBERTa LM head's output layer in `model` a `PaddedVocabLinear` (padding to
    `multiple`; 1 turns padding off). Returns how many layers it set."""
    from transformers.models.roberta.modeling_roberta import RobertaLMHead

    if multiple < 1:
        raise ValueError(f"the vocabulary padding multiple must be >= 1, got {multiple}")
    count = 0
    for module in model.modules():
        if isinstance(module, RobertaLMHead):
            if isinstance(module.decoder, PaddedVocabLinear):
                module.decoder.multiple = multiple
            else:
                module.decoder = PaddedVocabLinear.replacing(module.decoder, multiple)
            count += 1
    return count


def padding_multiple_for(device_type: str, requested: int | None) -> int:
    """The multiple `qarac train` pads to: `requested`, else DEFAULT_MULTIPLE on CUDA and none
    (1) on CPU, where the product's speed does not depend on V's alignment and the padded copy
    of the weight would only cost time."""
    if requested is not None:
        return requested
    return DEFAULT_MULTIPLE if device_type == "cuda" else 1
