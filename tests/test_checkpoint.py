"""save_pretrained / from_pretrained: bit-exact, sharing kept, bad directories named."""

import json

import pytest
import torch

from model_helpers import tiny_config, trainer_batch
from qarac import QaracDecoderModel, QaracEncoderModel, QaracTrainerModel
from qarac.checkpoint import CheckpointError, load_base_model


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


@pytest.mark.parametrize("cls", [QaracEncoderModel, QaracDecoderModel, QaracTrainerModel])
@pytest.mark.parametrize("legacy", [False, True])
def test_reload_is_bit_exact(tmp_path, cls, legacy):
    config = tiny_config().legacy() if legacy else tiny_config()
    torch.manual_seed(0)
    model = cls(config)
    model.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path)
    assert loaded.config == config
    assert_same_state(model, loaded)


def test_tying_and_sharing_survive_reload(tmp_path):
    QaracTrainerModel(tiny_config()).save_pretrained(tmp_path)
    trainer = QaracTrainerModel.from_pretrained(tmp_path)
    assert trainer.question_encoder.encoder is trainer.answer_encoder.encoder
    decoder = trainer.decoder
    assert decoder.decoder_head.head.decoder.weight.data_ptr() == decoder.decoder.embeddings.word_embeddings.weight.data_ptr()
    inputs, _ = trainer_batch()
    trainer.eval()
    with torch.no_grad():  # the reloaded model computes, not just holds the weights
        assert trainer(inputs).encode_decode.isfinite().all()


def test_saved_file_stores_shared_weights_once(tmp_path):
    from safetensors import safe_open

    QaracTrainerModel(tiny_config()).save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as handle:
        keys = set(handle.keys())
    word_embeddings = [k for k in keys if k.endswith("embeddings.word_embeddings.weight")]
    assert len(word_embeddings) == 2  # encoder base once (not once per encoder), decoder base once
    assert not any(k.startswith("decoder.decoder_head.head.decoder.weight") for k in keys)


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        QaracTrainerModel.from_pretrained(tmp_path / "nowhere")


def test_wrong_model_class(tmp_path):
    QaracEncoderModel(tiny_config()).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="holds a QaracEncoderModel, not a QaracDecoderModel"):
        QaracDecoderModel.from_pretrained(tmp_path)


def test_corrupt_safetensors(tmp_path):
    QaracEncoderModel(tiny_config()).save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        QaracEncoderModel.from_pretrained(tmp_path)


def test_missing_and_extra_weights_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    QaracEncoderModel(tiny_config()).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["head.local_projection"]
    state["head.stray"] = torch.zeros(2)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing weights \['head.local_projection'\].*unexpected weights \['head.stray'\]"):
        QaracEncoderModel.from_pretrained(tmp_path)


def test_corrupt_config(tmp_path):
    QaracEncoderModel(tiny_config()).save_pretrained(tmp_path)
    (tmp_path / "qarac_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        QaracEncoderModel.from_pretrained(tmp_path)


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    import safetensors.torch

    torch.manual_seed(0)
    first = QaracEncoderModel(tiny_config())
    first.save_pretrained(tmp_path)

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_model", explode)
    with pytest.raises(OSError, match="disk full"):
        QaracEncoderModel(tiny_config()).save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "qarac_config.json"]
    assert_same_state(first, QaracEncoderModel.from_pretrained(tmp_path))


# --- RoBERTa base directories -------------------------------------------------------------

def test_from_base_model_loads_the_roberta_weights(tiny_model_dir):
    from safetensors.torch import load_file

    trainer = QaracTrainerModel.from_base_model(tiny_model_dir)
    saved = load_file(tiny_model_dir / "model.safetensors")
    for base in (trainer.question_encoder.encoder, trainer.decoder.decoder):
        own = base.state_dict()
        for name, tensor in saved.items():
            if name in own:
                assert torch.equal(own[name], tensor), name
    assert trainer.config.vocab_size == 512 and trainer.config.hidden_size == 32
    assert not hasattr(trainer.decoder.decoder, "pooler") or trainer.decoder.decoder.pooler is None


def test_legacy_base_keeps_the_pooler(tiny_model_dir):
    trainer = QaracTrainerModel.from_base_model(tiny_model_dir, tiny_config().legacy())
    assert trainer.question_encoder.encoder.pooler is not None
    assert trainer.config.is_legacy and trainer.config.vocab_size == 512


def test_base_not_roberta(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="not a RoBERTa checkpoint.*'bert'"):
        load_base_model(tmp_path)


def test_base_missing_config(tmp_path):
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_base_model(tmp_path)


def test_base_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        QaracTrainerModel.from_base_model(tmp_path / "absent")


def test_base_corrupt_safetensors(tmp_path, tiny_model_dir):
    import shutil

    shutil.copy(tiny_model_dir / "config.json", tmp_path / "config.json")
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_base_model(tmp_path)


def test_base_with_only_pickled_weights_is_refused(tmp_path, tiny_model_dir):
    import shutil

    shutil.copy(tiny_model_dir / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="pickled weights are not loaded"):
        load_base_model(tmp_path)


@pytest.mark.parametrize("legacy", [False, True])
def test_built_with_weights_draws_nothing_and_loads_everything(legacy):
    from qarac.base import built_with_weights

    config = tiny_config().legacy() if legacy else tiny_config()
    source = QaracTrainerModel(config).eval()
    rng = torch.get_rng_state()
    rebuilt, unexpected = built_with_weights(lambda: QaracTrainerModel(config), source.state_dict())
    assert torch.equal(torch.get_rng_state(), rng)  # no random initialisation was drawn
    assert unexpected == []
    assert_same_state(source, rebuilt.eval())
    head = rebuilt.decoder.decoder_head.head
    assert head.decoder.weight is rebuilt.decoder.decoder.embeddings.word_embeddings.weight
    assert head.decoder.bias is head.bias
    inputs, _ = trainer_batch()
    with torch.no_grad():
        assert torch.equal(source(inputs).encode_decode, rebuilt(inputs).encode_decode)


def test_built_with_weights_refuses_a_partial_state():
    from qarac.base import built_with_weights

    state = QaracTrainerModel(tiny_config()).state_dict()
    name = next(iter(state))
    partial = {k: v for k, v in state.items() if k != name}
    with pytest.raises(RuntimeError, match="missing"):
        built_with_weights(lambda: QaracTrainerModel(tiny_config()), partial)
    extra = {**state, "unknown.weight": torch.zeros(1)}
    with pytest.raises(RuntimeError, match="unexpected"):
        built_with_weights(lambda: QaracTrainerModel(tiny_config()), extra)
    _, unexpected = built_with_weights(lambda: QaracTrainerModel(tiny_config()), extra, allow_unexpected=True)
    assert unexpected == ["unknown.weight"]


def test_built_with_weights_can_share_the_tensors():
    from qarac.base import built_with_weights

    config = tiny_config().legacy()
    source = QaracTrainerModel(config).eval()
    state = source.state_dict()
    shared, _ = built_with_weights(lambda: QaracTrainerModel(config), state, share=True)
    for name, tensor in shared.state_dict().items():
        assert tensor.data_ptr() == state[name].data_ptr(), name  # no copy
    head = shared.decoder.decoder_head.head
    assert head.decoder.weight is shared.decoder.decoder.embeddings.word_embeddings.weight  # ties kept
    inputs, _ = trainer_batch()
    with torch.no_grad():
        before = shared.eval()(inputs).encode_decode
        source.decoder.decoder_head.head.dense.weight.mul_(2.0)  # a change to one is a change to the other
        after = shared(inputs).encode_decode
        assert torch.equal(after, source(inputs).encode_decode) and not torch.equal(before, after)
    with pytest.raises(RuntimeError, match="cannot share"):
        built_with_weights(lambda: QaracTrainerModel(config), {k: v.double() for k, v in state.items()}, share=True)


def test_a_flipped_byte_in_the_weights_data_is_refused(tmp_path):
    """Issue 23 item 8: the file still parses and has every weight; only its digest tells."""
    QaracEncoderModel(tiny_config()).save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-8] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model.safetensors was changed after saving \(sha256"):
        QaracEncoderModel.from_pretrained(tmp_path)
