"""Reading a corpus never silently drops rows (issue 13 item 3 and the 128 KiB field):
a stray quote, a field spanning lines or an oversized field is a one-line error naming
the file and line."""

from __future__ import annotations

import shutil

import pytest

from qarac.data import DEFAULT_DATA_DIR, Corpora, DataError, load_all_text


def test_sample_corpora_read_every_line():
    sizes = Corpora.from_directory(DEFAULT_DATA_DIR).sizes()
    for name, size in sizes.items():
        lines = (DEFAULT_DATA_DIR / f"{name}.csv").read_text(encoding="utf-8").count("\n")
        assert size == lines - 1, name  # one row per line after the header


def test_a_stray_quote_is_an_error_naming_the_line(tmp_path):
    """One unbalanced quote turned the 1406 rows of all_text.csv into 4."""
    lines = (DEFAULT_DATA_DIR / "all_text.csv").read_text(encoding="utf-8").splitlines()
    lines[10] = '"' + lines[10]  # line 11 of the file
    path = tmp_path / "all_text.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as error:
        load_all_text(path)
    message = str(error.value)
    assert f"{path}, line 11:" in message and "quote" in message and "\n" not in message


def test_a_field_spanning_lines_is_an_error(tmp_path):
    path = tmp_path / "question_answering.csv"
    path.write_text('question,answer\nWho?,"Socrates\nwas a man."\nWhat?,A thing.\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2: the 'answer' field spans lines 2-3"):
        Corpora.from_directory(_directory_with(tmp_path, path))


def test_an_oversized_field_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "all_text.csv"
    path.write_text("all_text\nfirst\n" + '"' + "x" * (200 * 1024) + '"\nlast\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"all_text.csv, line 3: .*field larger than field limit"):
        load_all_text(path)


def _directory_with(tmp_path, path):
    """The sample corpora with `path` in place of its namesake."""
    directory = tmp_path / "data"
    shutil.copytree(DEFAULT_DATA_DIR, directory)
    shutil.copy(path, directory / path.name)
    return directory
