"""Bad input: clear errors that name the problem."""

import json
import re
import shutil

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="needs the `legacy` extra (TensorFlow + tf-keras)")
pytestmark = pytest.mark.legacy

from legacy_keras.build import load_base_model, read_config  # noqa: E402
from legacy_keras.layers import GlobalAttentionPoolingHead  # noqa: E402


def test_rank_one_ids_rejected(legacy_trainer):
    with pytest.raises(ValueError, match=r"shape \(batch, tokens\)"):
        legacy_trainer.answer_encoder(tf.constant([0, 5, 2]))


def test_ids_outside_vocabulary_rejected(legacy_trainer):
    with pytest.raises(ValueError, match=r"vocabulary"):
        legacy_trainer.answer_encoder(tf.constant([[0, 512, 2]]))
    with pytest.raises(ValueError, match=r"vocabulary"):
        legacy_trainer.decoder((tf.zeros((1, 32)), tf.constant([[0, -1]])))


def test_too_long_sequence_rejected(legacy_trainer):
    too_long = tf.constant(np.full((1, 129), 5, dtype=np.int32))  # 128 positions allowed
    with pytest.raises(ValueError, match=r"129 tokens is longer than the 128 positions"):
        legacy_trainer.answer_encoder(too_long)


def test_mask_shape_mismatch_rejected(legacy_trainer):
    tokens = {"input_ids": tf.constant([[0, 5, 2]]), "attention_mask": tf.constant([[1, 1]])}
    with pytest.raises(ValueError, match=r"attention_mask shape"):
        legacy_trainer.answer_encoder(tokens)


def test_trainer_missing_input_named(legacy_trainer, legacy_batch):
    inputs = dict(legacy_batch[0])
    del inputs["statement1"]
    with pytest.raises(ValueError, match=r"lack \['statement1'\]"):
        legacy_trainer(inputs)


def test_head_and_decoder_head_shapes_checked(legacy_trainer):
    with pytest.raises(ValueError, match=r"\(batch, tokens, hidden\)"):
        GlobalAttentionPoolingHead()(tf.zeros((2, 8)))
    with pytest.raises(ValueError, match=r"hidden size 32"):
        legacy_trainer.decoder.decoder_head((tf.zeros((1, 16)), tf.zeros((1, 3, 32))))


def test_missing_model_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        load_base_model(tmp_path / "nowhere")


def test_directory_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no config.json"):
        read_config(tmp_path)


def test_directory_that_is_not_roberta(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    with pytest.raises(ValueError, match=r"'bert' model .*needs 'roberta'"):
        load_base_model(tmp_path)


def test_directory_without_weights(tmp_path):
    from qarac.presets import tiny_model_dir

    shutil.copy(tiny_model_dir() / "config.json", tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match=r"has no weights"):
        load_base_model(tmp_path)


def test_pickled_weights_are_refused(tmp_path):
    from qarac.presets import tiny_model_dir

    shutil.copy(tiny_model_dir() / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match=r"only pickled weights \['pytorch_model.bin'\], which are not loaded"):
        load_base_model(tmp_path)


def test_safetensors_win_over_a_pickle_beside_them(tmp_path):
    """A directory holding both model.safetensors (the file checked for missing and extra tensors)
    and a pytorch_model.bin with the word embeddings zeroed and a tensor deleted: the legacy loads
    the safetensors (transformers' `from_pt` would take the pickle first), so it holds their values."""
    import safetensors.numpy
    import torch

    from qarac.presets import tiny_model_dir

    model_dir = shutil.copytree(tiny_model_dir(), tmp_path / "both")
    stored = safetensors.numpy.load_file(model_dir / "model.safetensors")
    pickled = {name: torch.from_numpy(value.copy()) for name, value in stored.items()}
    pickled["embeddings.word_embeddings.weight"].zero_()
    del pickled["encoder.layer.1.attention.self.query.weight"]
    torch.save(pickled, model_dir / "pytorch_model.bin")
    base = load_base_model(model_dir)
    words = base.roberta.embeddings.weight.numpy()
    assert np.abs(words).max() > 0  # not the pickle's zeros
    np.testing.assert_array_equal(words, stored["embeddings.word_embeddings.weight"])  # a copy of the same floats
    query = next(v for v in base.weights if "layer_._1/attention/self/query/kernel" in v.name)
    np.testing.assert_array_equal(query.numpy(), stored["encoder.layer.1.attention.self.query.weight"].T)


def test_corrupt_weights_file(tmp_path):
    from qarac.presets import tiny_model_dir

    shutil.copy(tiny_model_dir() / "config.json", tmp_path / "config.json")
    (tmp_path / "model.safetensors").write_bytes(b"\x00not a safetensors file" * 10)
    with pytest.raises(ValueError, match=r"model.safetensors is not a readable safetensors file"):
        load_base_model(tmp_path)


def test_tf_weights_directory_loads(tmp_path):
    """A directory with TF weights (tf_model.h5) loads without `from_pt`."""
    from qarac.presets import tiny_model_dir

    base = load_base_model(tiny_model_dir())
    base.save_pretrained(tmp_path)
    assert (tmp_path / "tf_model.h5").is_file()
    again = load_base_model(tmp_path)
    tokens = tf.constant([[0, 17, 42, 2]])
    np.testing.assert_allclose(
        again(tokens).last_hidden_state.numpy(), base(tokens).last_hidden_state.numpy(), atol=1e-6
    )


def test_importing_the_packages_does_not_import_tensorflow():
    import subprocess
    import sys

    # `qarac` loads its names lazily: the model, the loss and the trainer are imported by name.
    code = ("import sys, qarac, legacy_keras, qarac.training.loop, qarac.vocab_padding\n"
            "from qarac import QaracTrainerModel, QaracLoss, QaracConfig\n"
            "from transformers import RobertaModel\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("fault, name", [("missing", "encoder.layer.1.attention.self.query.weight"),
                                         ("shape", "encoder.layer.0.output.dense.bias"),
                                         ("no_format", "'format' metadata")])
def test_legacy_refuses_incomplete_weights(tmp_path, fault, name):
    """Issue 13 item 6: TF would initialise a missing tensor randomly and only warn."""
    from qarac.presets import tiny_model_dir
    from weights_helpers import faulty_model_dir

    model_dir = faulty_model_dir(tiny_model_dir(), tmp_path / "model", fault)
    with pytest.raises(ValueError, match=re.escape(name)):
        load_base_model(model_dir)
