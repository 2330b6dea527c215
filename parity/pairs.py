"""What a user writes a pair spec with, in one import (the parts live in `parity.core`):

    from parity.pairs import TRANSPOSE, Batch, Pair, Rule, Stage, WeightMap, split_sum
"""

from parity.core.spec import Batch, Pair, Stage, load_spec
from parity.core.weights import IDENTITY, TRANSPOSE, Layout, Rule, WeightMap, WeightMapError, gate_blocks, split_sum

__all__ = ["Batch", "Pair", "Stage", "load_spec", "IDENTITY", "TRANSPOSE", "Layout", "Rule", "WeightMap",
           "WeightMapError", "gate_blocks", "split_sum"]
