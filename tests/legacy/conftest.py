"""Shared fixtures of the legacy (TensorFlow) tests.

TensorFlow is imported only inside the fixtures, so collecting this directory
without the `legacy` extra still works (each test module skips on its own).
"""

import pytest

# The seed's warning (shared/seed/qarac-porting-to-pytorch.md), verbatim and in its order.
SEED_MISSING = [
    "tf_roberta_model/roberta/pooler/dense/kernel:0",
    "tf_roberta_model/roberta/pooler/dense/bias:0",
    "qarac_trainer_model/qarac_encoder_model/global_attention_pooling_head/local projection:0",
    "qarac_trainer_model/qarac_encoder_model_1/global_attention_pooling_head_1/local projection:0",
    "tf_roberta_model_1/roberta/pooler/dense/kernel:0",
    "tf_roberta_model_1/roberta/pooler/dense/bias:0",
]
POOLERS = [name for name in SEED_MISSING if "pooler" in name]
LOCAL_PROJECTIONS = [name for name in SEED_MISSING if "local projection" in name]


@pytest.fixture(scope="session")
def legacy_trainer():
    """The faithful legacy trainer on the embedded tiny RoBERTa, built once."""
    from legacy_keras.build import build_trainer

    return build_trainer(seed=0)


@pytest.fixture(scope="session")
def legacy_batch(legacy_trainer):
    """(inputs, targets): batch 2, 7 tokens, padded rows."""
    from legacy_keras.build import synthetic_batch

    return synthetic_batch(legacy_trainer.decoder.config, batch_size=2, seq_len=7, seed=1)
