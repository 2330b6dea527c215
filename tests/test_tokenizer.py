"""The embedded byte-level BPE tokenizer: layout, determinism, round trips, loading."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from qarac.base import TRANSFORMERS_MAJOR
from qarac.data.corpora import DEFAULT_DATA_DIR, load_all_text
from qarac.tokenizer import DEFAULT_TOKENIZER_DIR, check_tokenizer_fits, load_tokenizer

ROOT = Path(__file__).resolve().parent.parent


def load_script(name: str):
    """Import a file of scripts/ as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sentences():
    return load_all_text(DEFAULT_DATA_DIR / "all_text.csv")


def test_special_tokens_have_robertas_ids(tokenizer):
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["<s>", "<pad>", "</s>", "<unk>",
                                                               "<mask>"]
    ids = (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id,
           tokenizer.unk_token_id, tokenizer.mask_token_id)
    assert ids == (0, 1, 2, 3, 4)


def test_vocabulary_is_exactly_512(tokenizer):
    assert len(tokenizer) == 512
    assert tokenizer.backend_tokenizer.get_vocab_size(with_added_tokens=True) == 512
    assert sorted(tokenizer.get_vocab().values()) == list(range(512))


@pytest.mark.skipif(TRANSFORMERS_MAJOR >= 5, reason="the shipped files are in the 4.57 line's save format")
def test_rebuilding_gives_identical_files(tmp_path):
    load_script("make_tokenizer").main(["--output", str(tmp_path)])
    for shipped in DEFAULT_TOKENIZER_DIR.iterdir():
        assert (tmp_path / shipped.name).read_bytes() == shipped.read_bytes(), shipped.name


def test_rebuilding_gives_the_same_tokenizer(tmp_path, tokenizer, sentences):
    """On either transformers line: same vocabulary, merges and encodings as the shipped files.

    (5.x writes other files, and drops the `<mask>` token's lstrip when it builds one, so only
    the 4.57 line rebuilds the files byte for byte; the shipped files load the same on both.)
    """
    load_script("make_tokenizer").main(["--output", str(tmp_path)])
    rebuilt = load_tokenizer(tmp_path)
    assert rebuilt.get_vocab() == tokenizer.get_vocab()
    model = json.loads(rebuilt.backend_tokenizer.to_str())["model"]
    shipped_model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    assert model["merges"] == shipped_model["merges"] and len(model["merges"]) > 200
    assert [rebuilt.encode(text) for text in sentences] == [tokenizer.encode(text) for text in sentences]


def test_full_encoding_wraps_text_in_s_and_end(tokenizer, sentences):
    for text in sentences[:50]:
        body = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.encode(text) == [0] + body + [2]


def test_sample_sentences_round_trip_and_stay_short(tokenizer, sentences):
    encodings = tokenizer(sentences)["input_ids"]
    for text, ids in zip(sentences, encodings):
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
        assert len(ids) < 30, text


def test_byte_level_handles_any_text_without_unk(tokenizer):
    text = "Zoë met Ōtani in 京都 — twice! 🙂"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_loads_from_vocab_and_merges_alone(tmp_path, tokenizer, sentences):
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(DEFAULT_TOKENIZER_DIR / name, tmp_path / name)
    legacy_files = load_tokenizer(tmp_path)
    for text in sentences[:20]:
        assert legacy_files.encode(text) == tokenizer.encode(text)


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "nowhere")


def test_directory_without_tokenizer_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="holds no tokenizer"):
        load_tokenizer(tmp_path)


def test_check_tokenizer_fits(tokenizer):
    check_tokenizer_fits(tokenizer, 512)
    check_tokenizer_fits(tokenizer, 50265)
    with pytest.raises(ValueError, match=r"512 tokens.*only 511"):
        check_tokenizer_fits(tokenizer, 511)
