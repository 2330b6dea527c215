"""The four QARAC corpora read from their CSV files, every row checked.

Layouts (CSV with a header line, as the original's data files):

    all_text.csv            all_text
    question_answering.csv  question, answer
    reasoning.csv           proposition0, proposition1, conclusion
    consistency.csv         statement0, statement1, consistency (1, 0 or -1)

A bad file is a `DataError` naming the file and line, raised before any tokenisation.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / "assets" / "data"
# Corpus name -> the columns its CSV must have (extra columns are ignored, but every row has a
# field for each column of its header).
CORPUS_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "all_text": ("all_text",),
    "question_answering": ("question", "answer"),
    "reasoning": ("proposition0", "proposition1", "conclusion"),
    "consistency": ("statement0", "statement1", "consistency"),
}
# SNLI's entailment, neutral and contradiction.
CONSISTENCY_LABELS = (1, 0, -1)


class DataError(ValueError):
    """A corpus file that cannot be read; the message names the file and line."""


# --- CSV loading ----------------------------------------------------------------

def _read_text(path: Path) -> str:
    """The file decoded as UTF-8 (a byte-order mark is allowed and dropped).

    Raises:
        DataError: the file is missing, empty, or not valid UTF-8.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such corpus file") from None
    if not raw.strip():
        raise DataError(f"{path}: the file is empty; expected a CSV header line and rows")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: undecodable bytes {raw[error.start:error.end]!r} "
                        "(the file must be UTF-8)") from None


# What a field spanning lines or a runaway field almost always means in these corpora.
UNBALANCED_QUOTE = "is a '\"' quote unbalanced there? (a quoted field runs on to the next quote)"


def _check_one_line(row: Mapping[str, str | list[str] | None], path: Path, start: int, end: int) -> None:
    """Every field of these layouts is one line: a field spanning lines means the CSV reader
    was swallowing rows (one stray quote turned 1406 rows into 4).

    Raises:
        DataError: naming the file, the line the row starts on and the field.
    """
    if start == end:
        return
    for name, value in row.items():
        values = value if isinstance(value, list) else [value]  # extra fields come as a list
        if any(isinstance(text, str) and ("\n" in text or "\r" in text) for text in values):
            raise DataError(f"{path}, line {start}: the {name!r} field spans lines {start}-{end}, but fields "
                            f"hold one line each; {UNBALANCED_QUOTE}")


def _check_field_count(row: Mapping[str, str | list[str] | None], header: Sequence[str], path: Path,
                       line: int) -> None:
    """A row of as many fields as the header: an unquoted comma in a text splits it, and the
    reader would file the pieces under the wrong columns ('Where, exactly, ...' became 'Where').

    Raises:
        DataError: naming the file, the line and both counts.
    """
    extra = row.get(None) or []  # DictReader files the fields past the header under None
    count = len(header) + len(extra) if extra else sum(row[name] is not None for name in header)
    if count != len(header):
        hint = " (a text holding a comma must be quoted: \"like, this\")" if count > len(header) else ""
        raise DataError(f"{path}, line {line}: {count} field{'s' if count != 1 else ''}, but the header has "
                        f"{len(header)} ({', '.join(header)}){hint}")


def _csv_cause(error: csv.Error, path: Path, line: int) -> str:
    """The csv module's error with its likely cause: an oversized field is named as such, and
    blamed on a quote only where the line holds one."""
    if "field larger than field limit" in str(error):
        text = _read_text(path).splitlines()
        quoted = line - 1 < len(text) and '"' in text[line - 1]
        cause = f"; {UNBALANCED_QUOTE}" if quoted else "; a corpus field holds one text, not a document"
        return f"a field larger than the csv field limit ({csv.field_size_limit()} characters): {error}{cause}"
    return f"{error}; {UNBALANCED_QUOTE}"


def read_rows(path: str | os.PathLike, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """Read a CSV with a header, checking that `columns` are present and filled.

    Args:
        path: the CSV file.
        columns: required column names; other columns are ignored.

    Returns:
        (line number, {column: text}) per data row, the line number being the
        row's last physical line (1 is the header).

    Raises:
        DataError: empty or undecodable file, a missing column, no data rows,
            a row with more or fewer fields than the header, an empty cell in
            a required column, a field spanning lines (an unbalanced quote) or
            one over the csv module's field limit (128 KiB).
    """
    path = Path(path)
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    header = reader.fieldnames or []
    missing = [name for name in columns if name not in header]
    if missing:
        raise DataError(f"{path}, line 1: missing column(s) {missing}; the header has {header}, "
                        f"expected {list(columns)}")
    rows = []
    line = 1  # the header's
    try:
        for row in reader:
            start, line = line + 1, reader.line_num
            _check_one_line(row, path, start, line)
            _check_field_count(row, header, path, line)
            for name in columns:
                # A short row leaves None in the columns it lacks.
                if row[name] is None or not row[name].strip():
                    raise DataError(f"{path}, line {line}: empty cell in column {name!r}")
            rows.append((line, {name: row[name] for name in columns}))
    except csv.Error as error:
        raise DataError(f"{path}, line {line + 1}: {_csv_cause(error, path, line + 1)}") from None
    if not rows:
        raise DataError(f"{path}: the file has a header but no data rows")
    return rows


def _parse_label(value: str, path: Path, line: int) -> int:
    """A consistency label: 1, 0 or -1 (written as integers or as 1.0, 0.0, -1.0)."""
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if number not in CONSISTENCY_LABELS:
        raise DataError(f"{path}, line {line}: bad consistency label {value!r}; "
                        f"expected one of {list(CONSISTENCY_LABELS)}")
    return int(number)


def load_all_text(path: str | os.PathLike) -> list[str]:
    """Sentences of an `all_text` CSV."""
    return [row["all_text"] for _, row in read_rows(path, CORPUS_COLUMNS["all_text"])]


def load_question_answering(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(question, answer) pairs."""
    rows = read_rows(path, CORPUS_COLUMNS["question_answering"])
    return [(row["question"], row["answer"]) for _, row in rows]


def load_reasoning(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """(proposition0, proposition1, conclusion) syllogisms."""
    rows = read_rows(path, CORPUS_COLUMNS["reasoning"])
    return [(row["proposition0"], row["proposition1"], row["conclusion"]) for _, row in rows]


def load_consistency(path: str | os.PathLike) -> list[tuple[str, str, int]]:
    """(statement0, statement1, label) pairs, label in {1, 0, -1}.

    Raises:
        DataError: also for a label other than 1, 0 or -1.
    """
    path = Path(path)
    rows = read_rows(path, CORPUS_COLUMNS["consistency"])
    return [(row["statement0"], row["statement1"], _parse_label(row["consistency"], path, line))
            for line, row in rows]


@dataclass(frozen=True)
class Corpora:
    """The four corpora as loaded, untokenised."""

    all_text: list[str]
    question_answering: list[tuple[str, str]]
    reasoning: list[tuple[str, str, str]]
    consistency: list[tuple[str, str, int]]

    @classmethod
    def from_directory(cls, directory: str | os.PathLike = DEFAULT_DATA_DIR) -> Corpora:
        """Load `<name>.csv` for each corpus name in CORPUS_COLUMNS."""
        directory = Path(directory)
        return cls(load_all_text(directory / "all_text.csv"),
                   load_question_answering(directory / "question_answering.csv"),
                   load_reasoning(directory / "reasoning.csv"),
                   load_consistency(directory / "consistency.csv"))

    def sizes(self) -> dict[str, int]:
        """Rows per corpus."""
        return {"all_text": len(self.all_text),
                "question_answering": len(self.question_answering),
                "reasoning": len(self.reasoning), "consistency": len(self.consistency)}


def compose_all_text(corpora: Corpora) -> list[str]:
    """all_text as the original's data preparation composed it from the other corpora (docs/legacy.md §1.4)."""
    answers = [answer for _, answer in corpora.question_answering]
    premises = [proposition0 for proposition0, _, _ in corpora.reasoning]
    conclusions = [conclusion for _, _, conclusion in corpora.reasoning]
    statements0 = [statement0 for statement0, _, _ in corpora.consistency]
    statements1 = [statement1 for _, statement1, _ in corpora.consistency]
    return answers + premises + premises + conclusions + statements0 + statements1

