"""The `qarac` command: train, encode, generate end to end, and one-line errors with exit status 2."""

from __future__ import annotations

import numpy as np
import pytest

from qarac.cli import main
from training_helpers import run_qarac


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step run through `main` (in-process); its output directory."""
    output = tmp_path_factory.mktemp("cli-run")
    main(["train", "--output", str(output), "--max-steps", "2", "--batch-size", "2", "--max-length", "24",
          "--no-progress"])
    return output


def test_train_writes_checkpoint_history_and_plot(trained):
    assert (trained / "latest").read_text().strip() == "checkpoint-00000002"
    assert (trained / "loss_history.json").is_file() and (trained / "loss_curve.png").is_file()


def test_encode_and_generate(trained, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("All men are mortal.\n\nSocrates is a man.\n", encoding="utf-8")
    vectors = tmp_path / "v.npy"
    main(["encode", str(trained), "--file", str(texts), "--output", str(vectors)])
    answers = np.load(vectors)
    assert answers.shape == (3, 32) and answers.dtype == np.float32 and np.isfinite(answers).all()
    answers = answers[[0, 2]]  # row i is line i: the blank line 1 is encoded too
    main(["encode", str(trained), "All men are mortal.", "Socrates is a man.", "--question",
          "--output", str(vectors)])
    questions = np.load(vectors)
    assert questions.shape == (2, 32) and not np.allclose(questions, answers)  # another pooling head
    capsys.readouterr()
    main(["generate", str(trained), "--vector", str(vectors), "--max-length", "6"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    main(["generate", str(trained), "--text", "Socrates is a man.", "--max-length", "6"])
    assert len(capsys.readouterr().out.splitlines()) == 1


def _fails_with(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and fragment in error, error


def test_missing_model_dir(tmp_path, capsys):
    _fails_with(capsys, ["train", "--output", str(tmp_path / "out"), "--model", str(tmp_path / "nowhere"),
                         "--max-steps", "1"], "does not exist")


def test_bad_data_file(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("all_text", "question_answering", "reasoning"):
        (data / f"{name}.csv").write_text("wrong_column\nx\n", encoding="utf-8")
    _fails_with(capsys, ["train", "--output", str(tmp_path / "out"), "--data", str(data), "--max-steps", "1"],
                "all_text.csv, line 1: missing column")


def test_resume_without_checkpoint(tmp_path, capsys):
    _fails_with(capsys, ["train", "--output", str(tmp_path), "--resume", "--max-steps", "1"], "no checkpoint")


def test_encode_bad_inputs(trained, tmp_path, capsys):
    _fails_with(capsys, ["encode", str(tmp_path), "hi", "--output", str(tmp_path / "v.npy")], "not a QARAC checkpoint")
    _fails_with(capsys, ["encode", str(trained), "--output", str(tmp_path / "v.npy")], "no texts")
    np.save(tmp_path / "wrong.npy", np.zeros((2, 5), dtype=np.float32))
    _fails_with(capsys, ["generate", str(trained), "--vector", str(tmp_path / "wrong.npy")], "shape (N, 32)")


@pytest.mark.line_independent
def test_module_entry_point_reports_errors_in_one_line(tmp_path):
    result = run_qarac("train", "--output", str(tmp_path), "--model", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("qarac train: error:")


def test_new_run_over_an_old_one_is_refused_in_one_line(trained, capsys):
    """Issue 13 item 1: `qarac train --output R` over a finished run deleted it silently."""
    before = (trained / "loss_history.json").read_bytes()
    _fails_with(capsys, ["train", "--output", str(trained), "--max-steps", "1", "--no-progress"],
                "continue it with --resume, or replace it with --overwrite")
    assert (trained / "loss_history.json").read_bytes() == before


def test_output_naming_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    _fails_with(capsys, ["train", "--output", str(tmp_path / "file"), "--max-steps", "1"], "is a file")


@pytest.mark.parametrize("flag, value", [("--lr", "nan"), ("--lr", "-1"), ("--decay-rate", "inf"),
                                         ("--epsilon", "0"), ("--keep-checkpoints", "0")])
def test_bad_train_flags_fail_before_work(tmp_path, capsys, flag, value):
    _fails_with(capsys, ["train", "--output", str(tmp_path / "out"), flag, value, "--max-steps", "1"],
                flag.lstrip("-").replace("-", "_").replace("lr", "learning_rate"))
    assert not (tmp_path / "out").exists()


def test_garbage_in_latest_names_the_file(trained, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "latest").write_bytes(b"\xff\x00garbage")
    _fails_with(capsys, ["encode", str(run), "hi", "--output", str(tmp_path / "v.npy")], str(run / "latest"))
    _fails_with(capsys, ["train", "--output", str(run), "--resume", "--max-steps", "3"], str(run / "latest"))


def test_version_and_train_help_give_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("qarac 0.")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for fragment in ("--batch-size BATCH_SIZE examples per process (default: 16)", "(default: 0.99)",
                     "all_text.csv, question_answering.csv, reasoning.csv, consistency.csv",
                     "--keep-checkpoints KEEP_CHECKPOINTS", "--overwrite"):
        assert fragment in help_text, fragment


def test_encode_names_the_file_it_wrote_and_batches_agree(trained, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"Sentence number {i} is here.\n" for i in range(7)), encoding="utf-8")
    main(["encode", str(trained), "--file", str(texts), "--output", str(tmp_path / "x"), "--batch-size", "3"])
    assert capsys.readouterr().out.strip().endswith(f"written to {tmp_path / 'x.npy'}")
    main(["encode", str(trained), "--file", str(texts), "--output", str(tmp_path / "y.npy")])
    batched, whole = np.load(tmp_path / "x.npy"), np.load(tmp_path / "y.npy")
    assert batched.shape == (7, 32)
    np.testing.assert_allclose(batched, whole, rtol=0, atol=1e-6)  # padding to another length moves ~1e-7


@pytest.mark.parametrize("max_length", ["-5", "0", "2", "1000"])
def test_encode_bad_max_length_is_one_line(trained, tmp_path, capsys, max_length):
    _fails_with(capsys, ["encode", str(trained), "hi", "--output", str(tmp_path / "v"), "--max-length", max_length],
                f"max_length {max_length} is outside [3, 128]")


def test_generate_takes_a_float64_vector_file(trained, tmp_path, capsys):
    main(["encode", str(trained), "Socrates is a man.", "--output", str(tmp_path / "v.npy")])
    np.save(tmp_path / "v64.npy", np.load(tmp_path / "v.npy").astype(np.float64)[0])  # (H,) float64
    capsys.readouterr()
    main(["generate", str(trained), "--vector", str(tmp_path / "v64.npy"), "--max-length", "6"])
    assert len(capsys.readouterr().out.splitlines()) == 1


# --- issue 23: nothing lost, nothing misaligned ----------------------------------------------------

def _copy_run(trained, tmp_path):
    import shutil

    return shutil.copytree(trained, tmp_path / "run")


def _latest(run):
    return run / (run / "latest").read_text().strip()


def test_encode_file_row_i_is_line_i(trained, tmp_path, capsys):
    """Item 5: a blank line was skipped, so row N of the output was no longer line N."""
    texts = tmp_path / "texts.txt"
    texts.write_text("All men are mortal.\n\nSocrates is a man.\n", encoding="utf-8")
    main(["encode", str(trained), "--file", str(texts), "--output", str(tmp_path / "file.npy")])
    assert "3 vectors" in capsys.readouterr().out
    main(["encode", str(trained), "All men are mortal.", "", "Socrates is a man.", "--output",
          str(tmp_path / "args.npy")])
    from_file, from_args = np.load(tmp_path / "file.npy"), np.load(tmp_path / "args.npy")
    assert from_file.shape == (3, 32)
    np.testing.assert_allclose(from_file, from_args, rtol=0, atol=1e-6)


def test_generate_vector_that_is_no_array_says_so_without_inviting_unsafe_loading(trained, tmp_path, capsys):
    """Item 10: random bytes were "pickled (object) data. If you trust the file you can load it unsafely"."""
    noise = tmp_path / "noise.npy"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", str(trained), "--vector", str(noise)])
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(error.splitlines()) == 1, error
    assert "not a .npy array" in error and "unsafe" not in error and "pickle" not in error.lower(), error
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _fails_with(capsys, ["generate", str(trained), "--vector", str(tmp_path / "objects.npy")], "Python objects")


def test_encode_file_that_is_a_directory_and_output_under_a_file(trained, tmp_path, capsys):
    """Item 11: `encode --file DIR` said "text file … does not exist"."""
    _fails_with(capsys, ["encode", str(trained), "--file", str(tmp_path), "--output", str(tmp_path / "v")],
                f"--file {tmp_path} is a directory")
    (tmp_path / "plain").write_text("x")
    _fails_with(capsys, ["encode", str(trained), "hi", "--output", str(tmp_path / "plain" / "v.npy")],
                f"{tmp_path / 'plain'} is a file")
    _fails_with(capsys, ["encode", str(trained), "hi", "--output", "/proc/v.npy"], "cannot create files in /proc")


def test_a_flipped_byte_in_the_weights_is_refused(trained, tmp_path, capsys):
    """Item 8: a flipped byte in model.safetensors' data was encoded from, exit 0."""
    run = _copy_run(trained, tmp_path)
    weights = _latest(run) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01  # in the tensor data, past the header: the file still parses
    weights.write_bytes(bytes(data))
    _fails_with(capsys, ["encode", str(run), "hi", "--output", str(tmp_path / "v.npy")],
                f"{weights} was changed after saving")


def test_latest_may_not_lead_out_of_its_run(trained, tmp_path, capsys):
    """Item 8: a `latest` holding ../../other-run/checkpoint-… was followed into another run."""
    run = _copy_run(trained, tmp_path)
    other = tmp_path / "other-run"
    other.mkdir()
    (_latest(run)).rename(other / "checkpoint-00000002")
    (run / "latest").write_text("../other-run/checkpoint-00000002")
    _fails_with(capsys, ["encode", str(run), "hi", "--output", str(tmp_path / "v.npy")], str(run / "latest"))
    (run / "checkpoint-00000002").symlink_to(other / "checkpoint-00000002")
    (run / "latest").write_text("checkpoint-00000002")
    _fails_with(capsys, ["encode", str(run), "hi", "--output", str(tmp_path / "v.npy")], "outside")


@pytest.fixture(scope="module")
def own_tokenizer_run(tmp_path_factory):
    """A 1-step run with `--tokenizer DIR`, a tokenizer other than the embedded one."""
    from qarac.data.corpora import DEFAULT_DATA_DIR, load_all_text
    from qarac.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("own-tokenizer")
    train_tokenizer(load_all_text(DEFAULT_DATA_DIR / "all_text.csv"), vocab_size=400).save_pretrained(root / "tok")
    main(["train", "--output", str(root / "run"), "--tokenizer", str(root / "tok"), "--max-steps", "1",
          "--batch-size", "4", "--max-length", "32", "--no-progress"])
    return root


def test_a_checkpoint_refuses_a_missing_or_other_tokenizer(own_tokenizer_run, tmp_path, capsys):
    """Item 6: a checkpoint trained with --tokenizer DIR, its tokenizer.json removed, fell back
    to the embedded tokenizer and encoded (cosine 0.896 to the right vectors), exit 0."""
    import shutil

    from qarac.tokenizer import DEFAULT_TOKENIZER_DIR

    run = shutil.copytree(own_tokenizer_run / "run", tmp_path / "run")
    main(["encode", str(run), "hi", "--output", str(tmp_path / "v.npy")])  # intact: encodes
    checkpoint = _latest(run)
    (checkpoint / "tokenizer.json").unlink()
    _fails_with(capsys, ["encode", str(run), "hi", "--output", str(tmp_path / "v.npy")], "tokenizer.json")
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        shutil.copy(DEFAULT_TOKENIZER_DIR / name, checkpoint / name)
    _fails_with(capsys, ["encode", str(run), "hi", "--output", str(tmp_path / "v.npy")], "tokenizer")
    _fails_with(capsys, ["generate", str(run), "--text", "hi"], "tokenizer")


def test_resume_takes_the_runs_settings_unless_given(tmp_path, capsys):
    """Item 13: `--resume` alone after `--batch-size 4` was refused ("batch_size 4 → 16")."""
    import json

    run = tmp_path / "run"
    main(["train", "--output", str(run), "--max-steps", "1", "--batch-size", "4", "--max-length", "32",
          "--lr", "1e-3", "--no-progress"])
    main(["train", "--output", str(run), "--resume", "--max-steps", "2"])
    state = json.loads((_latest(run) / "training_state.json").read_text())
    assert state["step"] == 2
    assert {key: state["train_config"][key] for key in ("batch_size", "max_length", "learning_rate", "progress")} == \
        {"batch_size": 4, "max_length": 32, "learning_rate": 1e-3, "progress": False}
    _fails_with(capsys, ["train", "--output", str(run), "--resume", "--max-steps", "3", "--batch-size", "16"],
                "batch_size 4 → 16")


@pytest.mark.parametrize("where", ["proc", "under_a_file"])
def test_train_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, monkeypatch, where):
    """Item 11: the output's writability is probed before the model is built, with the real cause
    (run as root, permission bits pass /proc; a parent that is a regular file is no missing directory)."""
    import qarac.training.loop

    monkeypatch.setattr(qarac.training.loop, "build_model", lambda *a, **k: pytest.fail("the model was built"))
    (tmp_path / "plain").write_text("x")
    output, cause = {"proc": ("/proc/qarac-run", "--output /proc/qarac-run: cannot create it"),
                     "under_a_file": (str(tmp_path / "plain" / "run"), f"{tmp_path / 'plain'} is a file")}[where]
    _fails_with(capsys, ["train", "--output", output, "--max-steps", "1", "--no-progress"], cause)
    assert (tmp_path / "plain").read_text() == "x"


def test_encode_file_drops_a_byte_order_mark(trained, tmp_path, capsys):
    """Issue 35 item 8: a UTF-8 BOM stayed on line 1 (its vector up to 0.585 from the same line without it)."""
    marked, plain = tmp_path / "marked.txt", tmp_path / "plain.txt"
    marked.write_bytes("\ufeffAll men are mortal.\nSocrates is a man.\n".encode("utf-8"))
    plain.write_text("All men are mortal.\nSocrates is a man.\n", encoding="utf-8")
    for source in (marked, plain):
        main(["encode", str(trained), "--file", str(source), "--output", str(tmp_path / f"{source.stem}.npy")])
    np.testing.assert_allclose(np.load(tmp_path / "marked.npy"), np.load(tmp_path / "plain.npy"), rtol=0, atol=1e-6)


def test_encode_file_that_is_a_pipe_says_so_without_reading_it(trained, tmp_path, capsys):
    """Issue 35 item 8: `--file /dev/stdin` or a FIFO was reported as "does not exist" (it is read twice:
    counted, then encoded, which a pipe cannot give)."""
    import os

    fifo = tmp_path / "texts.fifo"
    os.mkfifo(fifo)
    _fails_with(capsys, ["encode", str(trained), "--file", str(fifo), "--output", str(tmp_path / "v.npy")],
                "is not a regular file")


@pytest.mark.parametrize("seed", [str(2**70), "-1"])
def test_a_seed_out_of_range_is_one_line(tmp_path, capsys, seed):
    """Issue 35 item 8: `--seed 2**70` said "Overflow when unpacking long long"."""
    _fails_with(capsys, ["train", "--output", str(tmp_path / "out"), "--seed", seed, "--max-steps", "1"], "--seed")
    assert not (tmp_path / "out").exists()
