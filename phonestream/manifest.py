"""Labelled recordings: the TSV manifests that ``eval``, ``check-eval``, ``lm build`` and the training recipe read.

A manifest is a tab-separated file with a header line. Its audio column (``audio`` or ``wav``) holds paths
relative to the manifest; the other columns are whatever the reader needs: ``phones`` (space-separated
symbols) for ``eval`` and training, ``text`` for the pronunciation check and for leaving evaluation
prompts out of LM and training text, ``id`` to name a row (its number otherwise). Cells are read as
written (no quoting rules), so a text may hold quotes.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

AUDIO_COLUMNS = ("audio", "wav")


class ManifestError(ValueError):
    """A manifest or row filter that cannot be used (one-line message for the user)."""


@dataclass(frozen=True)
class Where:
    """A row filter: ``COLUMN=REGEX`` keeps rows whose ``COLUMN`` matches ``REGEX`` (``re.search``),
    ``COLUMN!=REGEX`` the rows whose column does not."""

    column: str
    regex: re.Pattern
    negate: bool = False

    @classmethod
    def parse(cls, text: str) -> Where:
        """``"id=_[0-4]$"`` -> ``Where("id", re.compile("_[0-4]$"))``; ``"id!=x"`` negated.

        Raises:
            ManifestError: no ``=``, no column name, or a regular expression that does not compile.
        """
        m = re.match(r"^([^=!]*)(!?)=(.*)$", text)
        if not m or not m.group(1).strip():
            raise ManifestError(f"--where takes COLUMN=REGEX or COLUMN!=REGEX (e.g. id='_[0-4]$'), got {text!r}")
        try:
            regex = re.compile(m.group(3))
        except re.error as err:
            raise ManifestError(f"--where {text!r}: bad regular expression: {err}") from None
        return cls(m.group(1).strip(), regex, bool(m.group(2)))

    def __call__(self, row: dict[str, str]) -> bool:
        return bool(self.regex.search(row.get(self.column) or "")) != self.negate

    def __str__(self) -> str:
        return f"{self.column}{'!' if self.negate else ''}={self.regex.pattern}"


@dataclass(frozen=True)
class Row:
    """One row of a manifest: its id, its audio path (None when not asked for) and every cell by column."""

    id: str
    audio: Path | None
    fields: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


def read_rows(path: str | Path, columns: Sequence[str] = (), where: Iterable[Where] = (),
              audio: bool = True) -> Iterator[Row]:
    """The rows of a manifest that pass every ``where`` filter, in file order.

    Args:
        path: the TSV file.
        columns: columns the caller needs (checked, with the filters' columns, before the first row).
        where: row filters, all of which a row must pass.
        audio: whether the manifest must have an audio column; each row's path is then resolved against
            the manifest's folder.

    Raises:
        ManifestError: a missing file, or a needed column that is not there (the message lists the
            columns there are).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    where = list(where)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        have = reader.fieldnames or []
        listed = ", ".join(have) or "none"
        audio_col = next((c for c in AUDIO_COLUMNS if c in have), None)
        if audio and audio_col is None:
            raise ManifestError(f"{path} has no 'audio' or 'wav' column (columns: {listed})")
        for column in columns:
            if column not in have:
                raise ManifestError(f"{path} has no {column!r} column (columns: {listed})")
        for w in where:
            if w.column not in have:
                raise ManifestError(f"--where: {path} has no {w.column!r} column (columns: {listed})")
        for i, cells in enumerate(reader):
            if all(w(cells) for w in where):
                yield Row(cells.get("id") or str(i), path.parent / (cells[audio_col] or "") if audio else None, cells)


def column_texts(paths: Iterable[str | Path], column: str = "text") -> list[str]:
    """The non-empty cells of ``column`` in every manifest of ``paths`` (no audio column needed).

    Raises:
        ManifestError: as :func:`read_rows`.
    """
    return [row.fields[column] for p in paths for row in read_rows(p, [column], audio=False)
            if (row.fields[column] or "").strip()]


@dataclass(frozen=True)
class Item:
    """One labelled row of a manifest: ``fields`` holds every cell of the row, by column."""

    id: str
    audio: Path
    phones: list[str]
    fields: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


def read_manifest(path: str | Path, phones_column: str | None = "phones", limit: int | None = None,
                  where: Where | None = None) -> tuple[list[Item], int]:
    """Items of a manifest and how many rows were skipped for having no phones (``phones_column`` None:
    unlabelled, every row is kept with empty phones, as ``phonestream batch`` reads it).

    Raises:
        ManifestError: missing file, no header, no audio / phones column, no row matching ``where``.
    """
    items, skipped, matched = [], 0, 0
    for row in read_rows(path, [phones_column] if phones_column else [], [where] if where else []):
        matched += 1
        phones = (row.fields[phones_column] or "").split() if phones_column is not None else []
        if not phones and phones_column is not None:
            skipped += 1
            continue
        items.append(Item(row.id, row.audio, phones, row.fields))  # type: ignore[arg-type]
        if limit is not None and len(items) >= limit:
            break
    if where is not None and not matched:
        raise ManifestError(f"no row of {path} matches --where {where}")
    if not items:
        raise ManifestError(f"{path} has no rows" if phones_column is None else
                            f"{path} has no rows with phones in column {phones_column!r}")
    return items, skipped


__all__ = ["AUDIO_COLUMNS", "Item", "ManifestError", "Row", "Where", "column_texts", "read_manifest",
           "read_rows"]
