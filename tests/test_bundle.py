"""Reference bundle files: round trip, atomic writes, and every kind of bad bundle refused in one line."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from parity.bundle import (ARRAYS_NAME, MANIFEST_NAME, SCHEMA_VERSION, Bundle, BundleError, check_same_model,
                           manifest_digest,
                           read_bundle, sha256_of, vocabulary_sha256, write_bundle)

VOCABULARY = {"<s>": 0, "<pad>": 1, "</s>": 2, "a": 3}


def small_bundle(tmp_path) -> Bundle:
    weights = tmp_path / "model-src"
    weights.mkdir(exist_ok=True)
    (weights / "config.json").write_text(json.dumps({"model_type": "roberta", "hidden_size": 32}))
    bundle = Bundle(results={"census": {"tf/graph": {"missing": ["x", "y"]}}},
                    meta={"model_config": {"hidden_size": 32, "vocab_size": 99},
                          "vocabulary_sha256": vocabulary_sha256(VOCABULARY), "seeds": {"batch": 0}},
                    model_dir=weights)
    rng = np.random.default_rng(0)
    bundle.add("inputs/padded/question/input_ids", rng.integers(0, 99, (2, 7)), "token ids (B, T)")
    bundle.add("legacy/padded/output/encode_decode", rng.normal(size=(2, 7, 99)).astype(np.float32), "logits (B, T, V)")
    bundle.add("legacy/padded/output/consistency", np.float32([0.25, -1.0]), "cosine (B,)")
    return bundle


def written(tmp_path):
    return write_bundle(small_bundle(tmp_path), tmp_path / "bundle")


def rewrite_manifest(directory, change) -> None:
    """Edit the manifest and seal the edit with a fresh digest (as a deliberate editor would), so the
    checks after the digest's are what is tested."""
    path = directory / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    change(manifest)
    manifest["digest"] = manifest_digest(manifest)
    path.write_text(json.dumps(manifest))


def test_round_trip_is_exact(tmp_path):
    original = small_bundle(tmp_path)
    loaded = read_bundle(write_bundle(original, tmp_path / "bundle"))
    assert set(loaded.arrays) == set(original.arrays)
    for name, value in original.arrays.items():
        assert loaded.arrays[name].dtype == value.dtype and np.array_equal(loaded.arrays[name], value), name
    assert loaded.descriptions == original.descriptions
    assert loaded.results == original.results
    assert loaded.meta == original.meta
    assert (loaded.model_dir / "config.json").read_text() == (original.model_dir / "config.json").read_text()
    assert loaded.group("legacy/padded/output").keys() == {"encode_decode", "consistency"}


def test_manifest_lists_every_file_with_its_hash_and_every_array(tmp_path):
    directory = written(tmp_path)
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["files"] == {ARRAYS_NAME: sha256_of(directory / ARRAYS_NAME),
                                 "model/config.json": sha256_of(directory / "model" / "config.json")}
    assert manifest["arrays"]["legacy/padded/output/encode_decode"] == {
        "shape": [2, 7, 99], "dtype": "float32", "description": "logits (B, T, V)"}
    mode = (directory / ARRAYS_NAME).stat().st_mode
    assert stat.S_IMODE(mode) == 0o644 and stat.S_IMODE(directory.stat().st_mode) == 0o755


def test_an_existing_bundle_is_kept_unless_overwrite(tmp_path):
    directory = written(tmp_path)
    before = sha256_of(directory / ARRAYS_NAME)
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(small_bundle(tmp_path), directory)
    changed = small_bundle(tmp_path)
    changed.arrays["legacy/padded/output/consistency"] = np.float32([0.5, 0.5])
    write_bundle(changed, directory, overwrite=True)
    assert sha256_of(directory / ARRAYS_NAME) != before
    assert read_bundle(directory).arrays["legacy/padded/output/consistency"].tolist() == [0.5, 0.5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "model-src"]  # no staging left


def test_a_failed_write_leaves_the_earlier_bundle_intact(tmp_path):
    directory = written(tmp_path)
    before = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
    broken = small_bundle(tmp_path)
    broken.model_dir = tmp_path / "no-such-weights"
    with pytest.raises(FileNotFoundError):
        write_bundle(broken, directory, overwrite=True)
    assert {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "model-src"]


def test_another_schema_version_is_refused(tmp_path):
    directory = written(tmp_path)
    rewrite_manifest(directory, lambda m: m.update(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(BundleError, match=f"schema version {SCHEMA_VERSION + 1}.*reads version {SCHEMA_VERSION}"):
        read_bundle(directory)


def test_an_edited_file_is_refused_naming_it(tmp_path):
    directory = written(tmp_path)
    (directory / "model" / "config.json").write_text("{}")
    with pytest.raises(BundleError, match=r"model/config.json was changed after recording"):
        read_bundle(directory)


def test_a_removed_file_and_an_added_file_are_refused(tmp_path):
    directory = written(tmp_path)
    (directory / "model" / "extra.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"does not list: \['model/extra.bin'\]"):
        read_bundle(directory)
    (directory / "model" / "extra.bin").unlink()
    (directory / "model" / "config.json").unlink()
    with pytest.raises(BundleError, match="lacks model/config.json"):
        read_bundle(directory)


def _replace_arrays(directory, arrays) -> None:
    safetensors.numpy.save_file(arrays, str(directory / ARRAYS_NAME))
    rewrite_manifest(directory, lambda m: m["files"].update({ARRAYS_NAME: sha256_of(directory / ARRAYS_NAME)}))


def test_a_missing_array_is_refused_naming_it(tmp_path):
    directory = written(tmp_path)
    arrays = safetensors.numpy.load_file(str(directory / ARRAYS_NAME))
    del arrays["legacy/padded/output/consistency"]
    _replace_arrays(directory, arrays)
    with pytest.raises(BundleError, match=r"lacks arrays its manifest lists: \['legacy/padded/output/consistency'\]"):
        read_bundle(directory)


def test_an_array_of_another_shape_is_refused(tmp_path):
    directory = written(tmp_path)
    arrays = safetensors.numpy.load_file(str(directory / ARRAYS_NAME))
    arrays["legacy/padded/output/consistency"] = np.float32([1.0, 2.0, 3.0])
    _replace_arrays(directory, arrays)
    with pytest.raises(BundleError, match=r"'legacy/padded/output/consistency' is float32\[3\].*lists float32\[2\]"):
        read_bundle(directory)


def test_a_truncated_arrays_file_is_refused(tmp_path):
    directory = written(tmp_path)
    path = directory / ARRAYS_NAME
    path.write_bytes(path.read_bytes()[:-100])
    rewrite_manifest(directory, lambda m: m["files"].update({ARRAYS_NAME: sha256_of(path)}))
    with pytest.raises(BundleError, match="not a readable safetensors file"):
        read_bundle(directory)


@pytest.mark.parametrize("make", [lambda d: None, lambda d: d.mkdir(), lambda d: (d.mkdir(), (d / MANIFEST_NAME).write_text("{"))])
def test_missing_or_broken_bundle_directories(tmp_path, make):
    directory = tmp_path / "nothing"
    make(directory)
    with pytest.raises(BundleError) as error:
        read_bundle(directory)
    assert len(str(error.value).splitlines()) == 1 and str(directory) in str(error.value)


def test_a_bundle_of_another_model_or_vocabulary_is_refused(tmp_path):
    bundle = read_bundle(written(tmp_path))
    check_same_model(bundle, {"hidden_size": 32, "vocab_size": 99}, VOCABULARY)
    with pytest.raises(BundleError, match="another model.*hidden_size: bundle 32 vs model 64"):
        check_same_model(bundle, {"hidden_size": 64, "vocab_size": 99})
    with pytest.raises(BundleError, match="another vocabulary"):
        check_same_model(bundle, {"hidden_size": 32}, {**VOCABULARY, "b": 4})


def test_identical_arrays_are_stored_once(tmp_path):
    bundle = small_bundle(tmp_path)
    logits = bundle.arrays["legacy/padded/output/encode_decode"]
    bundle.add("legacy/padded/stage_out/LM head", logits.copy(), "the LM head's output: the logits again")
    bundle.add("legacy/padded/stage_out/other", logits[:1].copy(), "same bytes' prefix, another shape")
    directory = write_bundle(bundle, tmp_path / "bundle")
    stored = safetensors.numpy.load_file(str(directory / ARRAYS_NAME))
    assert "legacy/padded/stage_out/LM head" not in stored and "legacy/padded/stage_out/other" in stored
    loaded = read_bundle(directory)
    assert np.array_equal(loaded.arrays["legacy/padded/stage_out/LM head"], logits)
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    assert manifest["arrays"]["legacy/padded/stage_out/LM head"]["same_as"] == "legacy/padded/output/encode_decode"


def test_an_edited_result_changes_the_digest_and_is_refused(tmp_path):
    """Every number the verdict reads is under the digest: a result edited in manifest.json (the
    files' hashes untouched) is refused, naming the manifest."""
    directory = written(tmp_path)
    digest = read_bundle(directory).digest
    assert len(digest) == 64
    path = directory / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["results"]["edited"] = 1.0
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="manifest.json was changed after recording"):
        read_bundle(directory)
    rewrite_manifest(directory, lambda m: None)  # sealed again: readable, under another digest
    assert read_bundle(directory).digest != digest


def test_the_arrays_checked_are_the_arrays_loaded(tmp_path, monkeypatch):
    """The arrays file replaced after its hash was checked (a loop of `os.replace` beside `check`
    did it between the two reads): the bundle is refused, never judged on other arrays."""
    import parity.bundle as bundle_module

    directory = written(tmp_path)
    impostor = tmp_path / "impostor.safetensors"
    safetensors.numpy.save_file({name: np.zeros_like(value) for name, value in
                                 safetensors.numpy.load_file(str(directory / ARRAYS_NAME)).items()}, str(impostor))
    checked = bundle_module.read_manifest

    def swapped_after_the_check(*args, **kwargs):
        manifest = checked(*args, **kwargs)
        impostor.replace(directory / ARRAYS_NAME)
        return manifest

    monkeypatch.setattr(bundle_module, "read_manifest", swapped_after_the_check)
    with pytest.raises(BundleError, match=r"arrays.safetensors was changed after recording"):
        read_bundle(directory)


@pytest.mark.parametrize("name", ["../outside.txt", "/etc/hostname", "model/../../outside.txt"])
def test_a_manifest_naming_a_file_outside_the_bundle_is_refused(tmp_path, name):
    directory = written(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("not part of the bundle")
    target = Path(name) if name.startswith("/") else outside
    rewrite_manifest(directory, lambda m: m["files"].update({name: sha256_of(target)}))
    with pytest.raises(BundleError, match=r"names .* outside the bundle"):
        read_bundle(directory)
