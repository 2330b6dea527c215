"""Shared fixtures of the legacy (TensorFlow) tests.

TensorFlow is imported only inside the fixtures, so collecting this directory
without the `legacy` extra still works (each test module skips on its own).
"""

import pytest

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
