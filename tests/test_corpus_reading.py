"""Reading a corpus never silently drops rows (issue 13 item 3 and the 128 KiB field):
a stray quote, a field spanning lines or an oversized field is a one-line error naming
the file and line."""

from __future__ import annotations

import shutil

import pytest

from qarac.data.corpora import DEFAULT_DATA_DIR, Corpora, DataError, load_all_text


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


# --- issue 23 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, text, line", [
    ("question_answering.csv", "question,answer\nWho?,Socrates.\nWhere, exactly, does Maya work?,Maya works here.\n", 3),
    ("all_text.csv", "all_text\nHello, world and everyone.\nBye.\n", 2),
    ("reasoning.csv", "proposition0,proposition1,conclusion\nA.,B.,C.\nA.,B.\n", 3),
])
def test_a_row_with_more_or_fewer_fields_than_the_header_is_an_error(tmp_path, name, text, line):
    """Item 4: `Where, exactly, does Maya work?,Maya works…` became ('Where', ' exactly');
    an unquoted comma in all_text cut the sentence to 'Hello'."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as error:
        Corpora.from_directory(_directory_with(tmp_path, path))
    message = str(error.value)
    assert f"{path.name}, line {line}:" in message and "fields" in message and "header" in message, message
    assert "\n" not in message


def test_a_short_row_in_an_extra_column_is_an_error(tmp_path):
    """Fewer fields than the header, even where only an ignored column is short."""
    path = tmp_path / "all_text.csv"
    path.write_text("all_text,source\nFirst.,wiki\nSecond.\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"all_text.csv, line 3: 1 field.*header has 2"):
        load_all_text(path)


def test_a_huge_unquoted_cell_is_named_as_such_not_as_a_quote(tmp_path):
    """Item 12: a 1 MB unquoted cell was reported as "is a '\"' quote unbalanced there?"."""
    path = tmp_path / "all_text.csv"
    path.write_text("all_text\nfirst\n" + "x" * (1 << 20) + "\nlast\n", encoding="utf-8")
    with pytest.raises(DataError) as error:
        load_all_text(path)
    message = str(error.value)
    assert "all_text.csv, line 3:" in message and "field limit" in message, message
    assert "quote unbalanced" not in message and "'\"'" not in message
