"""A user's own pair (tests/user_pair.py) through the model-agnostic core, from its bundle, without
TensorFlow: the port passes; each classic recurrent porting bug, planted in the spec or the port the
user wrote, fails with the stage named; so does a port that loses a gradient or precision.

The bundle (tests/fixtures/user_pair) was recorded by
`.venv/bin/python -m parity record --spec tests/user_pair.py:SPEC --out tests/fixtures/user_pair`;
tests/legacy/test_user_pair_live.py records it again live.
"""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from parity.bundle import BundleError
from parity.cli import main
from parity.pairs import Layout, Rule, WeightMap, gate_blocks
from parity.core import codec, pipeline
from parity.core.report import verdict_line
from parity.testing import assert_matches_reference
from user_pair import SPEC, WEIGHTS, TextClassifier

BUNDLE = Path(__file__).parent / "fixtures" / "user_pair"
HERE = Path(__file__).resolve()


def with_rule(weights: WeightMap, keras: str, rule: Rule) -> WeightMap:
    """`weights` with the rule for Keras variable `keras` replaced by `rule`."""
    return WeightMap(tuple(rule if r.keras == keras else r for r in weights.rules), weights.torch_only)


# Planted bugs, each as a user would write it.
# The one Keras bias copied into both torch biases: the LSTM adds it twice.
BIAS_IN_BOTH = Layout("copied into both", lambda b: (b, b), lambda a, b: (a,))
BIASES_NOT_SUMMED = replace(SPEC, weights=with_rule(WEIGHTS, "lstm/lstm_cell/bias", Rule(
    "lstm/lstm_cell/bias", ("lstm.bias_ih_l0", "lstm.bias_hh_l0"), BIAS_IN_BOTH)))
# The input kernel's forget and input gate blocks swapped (as mapping a GRU's z/r order onto an LSTM would).
SWAPPED_GATES = replace(SPEC, weights=with_rule(WEIGHTS, "lstm/lstm_cell/kernel", Rule(
    "lstm/lstm_cell/kernel", "lstm.weight_ih_l0", gate_blocks("ifco", "fico"))))


class Unpacked(TextClassifier):
    """Runs the LSTM over the padding too, ignoring Keras' mask (no packed sequence)."""

    def forward(self, token_ids):
        _, (final, _) = self.lstm(self.embedding(token_ids))
        return self.classifier(final[-1])


class DetachedEmbedding(TextClassifier):
    """Cuts the graph after the embedding: its table never gets a gradient."""

    def forward(self, token_ids):
        lengths = (token_ids != 0).sum(dim=1).cpu()
        packed = pack_padded_sequence(self.embedding(token_ids).detach(), lengths, batch_first=True,
                                      enforce_sorted=False)
        _, (final, _) = self.lstm(packed)
        return self.classifier(final[-1])


class BFloat16Linear(torch.nn.Linear):
    """Its product in bfloat16 in the float32 path only (as autocast left on would); float64 untouched."""

    def forward(self, x):
        if x.dtype != torch.float32:
            return super().forward(x)
        return torch.nn.functional.linear(x.bfloat16(), self.weight.bfloat16(), self.bias.bfloat16()).float()


class BFloat16Classifier(TextClassifier):
    def __init__(self):
        super().__init__()
        self.classifier = BFloat16Linear(self.classifier.in_features, self.classifier.out_features)


class DropoutLeftOn(TextClassifier):
    """Dropout after the embedding, active whatever the mode (`training=True` hard-coded)."""

    def forward(self, token_ids):
        lengths = (token_ids != 0).sum(dim=1).cpu()
        dropped = torch.nn.functional.dropout(self.embedding(token_ids), 0.1, training=True)
        _, (final, _) = self.lstm(pack_padded_sequence(dropped, lengths, batch_first=True, enforce_sorted=False))
        return self.classifier(final[-1])


class BiasGradientDoubled(TextClassifier):
    """A backward hook doubles the classifier bias's gradient: the forward is right, one gradient is not."""

    def __init__(self):
        super().__init__()
        self.classifier.bias.register_hook(lambda grad: grad * 2)


UNPACKED = replace(SPEC, build_torch=lambda dtype: Unpacked())
DROPOUT = replace(SPEC, build_torch=lambda dtype: DropoutLeftOn())
DOUBLED = replace(SPEC, build_torch=lambda dtype: BiasGradientDoubled())
DETACHED = replace(SPEC, build_torch=lambda dtype: DetachedEmbedding())
BFLOAT16 = replace(SPEC, build_torch=lambda dtype: BFloat16Classifier())


@pytest.fixture(scope="module")
def recorded():
    return codec.read(BUNDLE, SPEC.name)


def test_the_port_passes_from_its_bundle(recorded):
    report = pipeline.check(SPEC, recorded)
    assert report.passed, verdict_line(report)
    assert [v.name for v in report.values][:3] == ["padded: stage:embedding", "padded: stage:lstm",
                                                   "padded: stage:classifier"]
    assert {c: (f.missing, f.zero) for c, f in report.census.items()} == {
        "keras/eager": ([], []), "keras/tf.function": ([], []), "torch": ([], [])}
    assert len(report.gradients) == len(list(TextClassifier().parameters()))


@pytest.mark.parametrize("spec, stage", [(BIASES_NOT_SUMMED, "padded: stage:lstm"),
                                         (SWAPPED_GATES, "padded: stage:lstm"),
                                         (UNPACKED, "padded: stage:lstm")])
def test_each_recurrent_porting_bug_fails_at_the_lstm(recorded, spec, stage):
    report = pipeline.check(spec, recorded)
    assert not report.checks["forward"] and report.first_failing_stage == stage
    embedding = next(v for v in report.values if v.name == "padded: stage:embedding")
    assert embedding.passed  # what comes before the bug still agrees


def test_without_packing_only_the_padded_rows_go_wrong(recorded):
    report = pipeline.check(UNPACKED, recorded)
    full = [v for v in report.values if v.name.startswith("full:")]
    assert full and all(v.passed for v in full)  # no padding, nothing to mask


def test_a_wrong_formula_shows_in_float64_at_the_same_stage(recorded):
    report = pipeline.check(SWAPPED_GATES, recorded)
    assert not report.checks["float64_exactness"] and report.first_float64_stage == "padded: stage:lstm"


def test_dropout_left_on_is_located_as_non_determinism(recorded):
    report = pipeline.check(DROPOUT, recorded)
    assert not report.checks["determinism"]
    assert report.first_nondeterministic_stage == "padded: stage:lstm"  # the embedding itself is deterministic


def test_a_gradient_wrong_behind_a_right_forward_is_named(recorded):
    report = pipeline.check(DOUBLED, recorded)
    assert report.checks["forward"] and not report.checks["gradient_parity"]
    assert [v.name for v in report.gradients if not v.passed] == ["gradient: classifier.bias"]


def test_a_lost_gradient_is_told_from_a_zero_one(recorded):
    report = pipeline.check(DETACHED, recorded)
    assert report.checks["forward"]  # the forward is right
    assert not report.checks["gradient_missing_sets_agree"]
    assert report.census["torch"].missing == ["embedding.weight"] and report.census["torch"].zero == []
    assert report.census["keras/eager"].missing == []


def test_a_port_less_precise_than_the_original_fails_precision_at_the_stage(recorded):
    report = pipeline.check(BFLOAT16, recorded)
    assert not report.checks["precision"]
    assert report.first_precision_stage == "padded: stage:classifier"
    assert report.first_float64_stage is None  # the float64 twin is exact: only the float32 path lost bits


def test_a_users_model_with_its_own_names_is_checked_by_the_spec(recorded):
    report = assert_matches_reference(TextClassifier(), BUNDLE, spec=SPEC)
    assert report.passed
    with pytest.raises(AssertionError, match="lstm"):
        assert_matches_reference(Unpacked(), BUNDLE, spec=SPEC)


def test_the_cli_runs_a_spec_from_a_file(tmp_path, capsys):
    assert main(["check", "--spec", f"{HERE.parent / 'user_pair.py'}:SPEC", str(BUNDLE), "--quiet",
                 "--json", str(tmp_path / "r.json")]) == 0
    assert "PASSED" in capsys.readouterr().out and (tmp_path / "r.json").is_file()
    assert main(["check", "--spec", f"{HERE}:SWAPPED_GATES", str(BUNDLE), "--quiet"]) == 1
    assert "first failing stage padded: stage:lstm" in capsys.readouterr().out


@pytest.mark.parametrize("spec, message", [("no_colon", "expected module:NAME"),
                                           ("tests/missing.py:SPEC", "is not a file"),
                                           (f"{HERE.parent / 'user_pair.py'}:WEIGHTS", "no Pair named WEIGHTS")])
def test_a_bad_spec_is_one_line_and_exit_2(spec, message, capsys):
    assert main(["check", "--spec", spec, str(BUNDLE)]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error


def test_a_bundle_of_another_pair_is_refused(recorded, capsys):
    other = f"{HERE}:RENAMED"
    assert main(["check", "--spec", other, str(BUNDLE)]) == 2
    assert "recorded for pair 'text-classifier', not 'renamed'" in capsys.readouterr().err


RENAMED = replace(SPEC, name="renamed")


def test_a_map_that_loses_bits_fails_the_round_trip(recorded):
    lossy = Layout("transposed through float16", lambda a: (a.T.astype("float16").astype("float32"),),
                   lambda a: (a.T,))
    spec = replace(SPEC, weights=with_rule(WEIGHTS, "classifier/kernel", Rule("classifier/kernel", "classifier.weight", lossy)))
    report = pipeline.check(spec, recorded)
    assert not report.checks["weights_round_trip"]
    assert report.weights["round_trip_failures"] == ["classifier/kernel"]


def test_a_recorded_value_its_float64_run_cannot_explain_is_refused(tmp_path):
    """An original's output edited in the bundle (resealed) would widen its own floor: refused, named."""
    import dataclasses

    run = codec.read(BUNDLE, SPEC.name)
    edited = dataclasses.replace(run, values={case: {v: dict(vals) for v, vals in variants.items()}
                                              for case, variants in run.values.items()})
    edited.values["padded"]["float32"]["output:output"] = run.values["padded"]["float32"]["output:output"] + 1.0
    codec.write(edited, tmp_path / "edited")
    with pytest.raises(BundleError, match=r"inconsistent: its float32 padded: output:output"):
        codec.read(tmp_path / "edited", SPEC.name)
