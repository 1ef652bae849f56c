"""Build the canonical train/test (+ validation) ``DatasetDict`` (image, prompt, answer, extras) from a caption folder.

``build_dataset`` is the fast path (``captions.csv``; per-row checks that only stat files); the
``build`` command runs ``check`` first and then calls the same code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from vlmtune.data.captions import Columns, Table, caption_columns, member_path, missing_reason, read_table
from vlmtune.data.schema import ANSWER, CANONICAL_COLUMNS, CAPTIONS_FILE, IMAGE, PROMPT, SPLIT, TEST, TRAIN, VALIDATION
from vlmtune.errors import VlmtuneError


def bucket(key: str) -> float:
    """A stable number in [0, 1] for ``key``: splits drawn from it never depend on row order."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def stable_split(file_name: str, test_ratio: float) -> str:
    """Deterministic split from the file name alone, so adding photos never reshuffles old ones."""
    return TEST if bucket(file_name) < test_ratio else TRAIN


@dataclass
class Row:
    """One index row mapped onto the schema; ``problem`` says why its file name is unusable."""

    line: int
    file_name: str
    path: Path | None
    problem: str | None
    caption: str
    prompt: str
    split: str
    extras: dict = field(default_factory=dict)


def extra_columns(table: Table, cols: Columns) -> list[str]:
    used = {cols.image, cols.caption, cols.prompt, SPLIT}
    extras = [k for k in table.header if k not in used]
    clash = [k for k in extras if k in CANONICAL_COLUMNS]
    if clash:
        raise VlmtuneError(f"{table.path}: column '{clash[0]}' clashes with the built dataset's own; rename it")
    return extras


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def table_rows(table: Table, cols: Columns, prompt: str, test_ratio: float) -> list[Row]:
    extras = extra_columns(table, cols)
    rows = []
    for line, raw in zip(table.lines, table.rows):
        name = "" if raw.get(cols.image) is None else str(raw[cols.image])  # unstripped: names are exact
        path, problem = member_path(table.base, name)
        rows.append(
            Row(
                line=line,
                file_name=name,
                path=path,
                problem=problem,
                caption=_text(raw.get(cols.caption)),
                prompt=_text(raw.get(cols.prompt)) or prompt,
                split=_text(raw.get(SPLIT)) or stable_split(name, test_ratio),
                extras={k: raw.get(k) for k in extras},
            )
        )
    return rows


def row_errors(row: Row, base: Path) -> list[str]:
    """Why this row cannot be trained on (stats only, no decoding); empty when it can."""
    errors = []
    if row.problem:
        errors.append(row.problem)
    elif not row.path.is_file():
        errors.append(missing_reason(base, row.file_name))
    if not row.caption:
        errors.append(f"empty caption for '{row.file_name}'")
    if row.split not in (TRAIN, VALIDATION, TEST):
        errors.append(f"split '{row.split}' must be train, validation or test")
    return errors


def build_dataset(folder: Path, prompt: str, test_ratio: float = 0.2):
    """``DatasetDict(train, test)`` (+ validation when rows say so) from ``folder/captions.csv``; images decode lazily."""
    table = read_table(Path(folder) / CAPTIONS_FILE)
    return dataset_from_table(table, caption_columns(table), prompt, test_ratio)


def dataset_from_table(table: Table, cols: Columns, prompt: str, test_ratio: float, every_row_test: bool = False):
    """``cols`` already resolved against ``table.header``. ``every_row_test``: one test split of
    every row, whatever its split column says (a set that is only evaluated on)."""
    from datasets import Dataset, DatasetDict, Image

    if table.problems:
        line, message = table.problems[0]
        raise VlmtuneError(f"{table.path}:{line}: {message}")
    by_split: dict[str, dict[str, list]] = {TRAIN: {}, TEST: {}, VALIDATION: {}}
    for row in table_rows(table, cols, prompt, test_ratio):
        errors = row_errors(row, table.base)
        if errors:
            raise VlmtuneError(f"{table.path}:{row.line}: {errors[0]}")
        values = {IMAGE: str(row.path), PROMPT: row.prompt, ANSWER: row.caption, **row.extras}
        for key, value in values.items():
            by_split[TEST if every_row_test else row.split].setdefault(key, []).append(value)
    for split in (TEST,) if every_row_test else (TRAIN, TEST):
        if not by_split[split]:
            raise VlmtuneError(f"{table.path}: no {split} rows; {empty_split_hint(split, test_ratio)}")
    return DatasetDict({s: Dataset.from_dict(c).cast_column(IMAGE, Image()) for s, c in by_split.items() if c})


def empty_split_hint(split: str, test_ratio: float) -> str:
    change = "raise" if split == TEST else "lower"
    return f"set split={split} on some rows or {change} --test-ratio (now {test_ratio})"
