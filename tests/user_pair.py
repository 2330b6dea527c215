"""A user's own pair, outside the package: a Keras text classifier and its PyTorch port.

Keras: Embedding(mask_zero=True) -> LSTM -> Dense logits. The port meets the classic recurrent
traps: Keras keeps one LSTM bias where torch keeps two (b_ih + b_hh), Keras' kernels are
(in, 4H) and torch's (4H, in), Keras skips masked steps where torch needs packed sequences,
and Keras' `recurrent_activation` must be torch's sigmoid. Gate order: both i, f, c(g), o.
This is the worked example of docs/your_model.md.
"""

import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from parity.pairs import TRANSPOSE, Batch, Pair, Rule, Stage, WeightMap, split_sum

VOCAB, EMBED, HIDDEN, CLASSES = 29, 6, 5, 3  # odd sizes: a transpose cannot hide


def build_keras(dtype: str):
    import tf_keras as keras

    tokens = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(VOCAB, EMBED, mask_zero=True, name="embedding", dtype=dtype)(tokens)
    x = keras.layers.LSTM(HIDDEN, recurrent_activation="sigmoid", name="lstm", dtype=dtype)(x)
    logits = keras.layers.Dense(CLASSES, name="classifier", dtype=dtype)(x)
    return keras.Model(tokens, logits)


class TextClassifier(torch.nn.Module):
    """The port of `build_keras`'s model: token ids (B, T), 0 = padding -> logits (B, CLASSES)."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(VOCAB, EMBED)
        self.lstm = torch.nn.LSTM(EMBED, HIDDEN, batch_first=True)
        self.classifier = torch.nn.Linear(HIDDEN, CLASSES)

    def forward(self, token_ids):
        lengths = (token_ids != 0).sum(dim=1).cpu()  # Keras' mask: right padding skipped
        packed = pack_padded_sequence(self.embedding(token_ids), lengths, batch_first=True, enforce_sorted=False)
        _, (final, _) = self.lstm(packed)
        return self.classifier(final[-1])


def keras_loss(outputs, targets):
    import tf_keras as keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)(targets["label"], outputs["output"])


def torch_loss(outputs, targets):
    return torch.nn.functional.cross_entropy(outputs["output"], targets["label"].long())


def batches():
    rng = np.random.default_rng(7)
    lengths = np.array([9, 4, 1, 7, 9])  # right padding of several lengths, one row of a single token
    ids = rng.integers(1, VOCAB, size=(5, 9)).astype(np.int32)
    ids[np.arange(9) >= lengths[:, None]] = 0
    labels = rng.integers(0, CLASSES, size=5).astype(np.int32)
    return {"padded": Batch({"token_ids": ids}, {"label": labels}),
            "full": Batch({"token_ids": rng.integers(1, VOCAB, size=(3, 9)).astype(np.int32)},
                          {"label": labels[:3]})}


WEIGHTS = WeightMap(rules=(
    Rule("embedding/embeddings", "embedding.weight"),
    Rule("lstm/lstm_cell/kernel", "lstm.weight_ih_l0", TRANSPOSE),
    Rule("lstm/lstm_cell/recurrent_kernel", "lstm.weight_hh_l0", TRANSPOSE),
    Rule("lstm/lstm_cell/bias", ("lstm.bias_ih_l0", "lstm.bias_hh_l0"), split_sum(2)),
    Rule("classifier/kernel", "classifier.weight", TRANSPOSE),
    Rule("classifier/bias", "classifier.bias"),
))


def final_state(output):
    """nn.LSTM returns (packed outputs, (h_n, c_n)); Keras' LSTM layer returns the last real step's h."""
    return output[1][0][-1]


SPEC = Pair(
    name="text-classifier", build_keras=build_keras, build_torch=lambda dtype: TextClassifier(),
    weights=WEIGHTS, batches=batches, keras_loss=keras_loss, torch_loss=torch_loss,
    stages=(Stage("embedding", keras="embedding", torch="embedding"),
            Stage("lstm", keras="lstm", torch="lstm", torch_output=final_state),
            Stage("classifier", keras="classifier", torch="classifier")),
)
