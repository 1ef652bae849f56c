"""Reading and writing ``captions.csv`` (the caption folder's index; see ``schema``).

Also reads the other index tables ``build``/``check`` accept (HF ``metadata.jsonl``/``metadata.csv``),
maps their columns onto the schema and resolves file names without letting them leave the folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from vlmtune.data.schema import ANSWER, CAPTION, FILE_NAME, PROMPT
from vlmtune.errors import VlmtuneError

CAPTION_ALIASES = (CAPTION, "text", ANSWER)
PROMPT_ALIASES = (PROMPT,)  # a VQA "question" column is named explicitly: --prompt-column
LABEL_ALIASES = ("label", "class", "category")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass
class Table:
    """An index file: rows (column -> value), each with the line it starts on, plus malformed rows."""

    path: Path
    header: list[str]
    rows: list[dict] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)

    @property
    def base(self) -> Path:
        return self.path.parent


def read_table(path: Path) -> Table:
    path = Path(path)
    if not path.is_file():
        raise VlmtuneError(f"{path}: no such captions file; create one with 'vlmtune data template DIR'")
    try:
        return _read_jsonl(path) if path.suffix.lower() == ".jsonl" else _read_csv(path)
    except UnicodeDecodeError:
        raise VlmtuneError(f"{path}: not UTF-8 text; save it as 'CSV UTF-8' (or JSON lines in UTF-8)") from None


def _read_csv(path: Path) -> Table:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        table = Table(path, list(reader.fieldnames or []))
        try:
            while True:
                start = reader.line_num + 1
                try:
                    row = next(reader)
                except StopIteration:
                    return table
                _add_csv_row(table, row, start)
        except csv.Error as err:
            raise VlmtuneError(f"{path}:{reader.line_num}: unreadable CSV ({err})") from None


def _add_csv_row(table: Table, row: dict, line: int) -> None:
    extra = row.pop(None, None)  # fields beyond the header: an unquoted comma, usually
    if extra:
        n = len(table.header) + len(extra)
        hint = "put quotes around captions that contain commas"
        table.problems.append((line, f"{n} fields for {len(table.header)} columns; {hint}"))
    table.rows.append({k: (v or "") for k, v in row.items()})
    table.lines.append(line)


def _read_jsonl(path: Path) -> Table:
    table = Table(path, [])
    with open(path, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except ValueError as err:
                table.problems.append((line, f"not valid JSON ({err})"))
                continue
            if not isinstance(row, dict):
                table.problems.append((line, "expected a JSON object per line"))
                continue
            table.header += [k for k in row if k not in table.header]
            table.rows.append(row)
            table.lines.append(line)
    return table


def read_captions(path: Path) -> list[dict[str, str]]:
    """Rows of a captions CSV; a one-line error for a missing file or missing columns."""
    table = read_table(path)
    caption_columns(table)
    return table.rows


def caption_columns(table: Table) -> Columns:
    """The fixed columns of ``captions.csv`` (no aliases: its format is ours)."""
    missing = {FILE_NAME, CAPTION} - set(table.header)
    if missing:
        raise VlmtuneError(
            f"{table.path}: missing column(s) {', '.join(sorted(missing))}; expected file_name,caption[,split]"
        )
    return Columns(FILE_NAME, CAPTION, PROMPT if PROMPT in table.header else None)


def write_captions(path: Path, rows: list[dict[str, str]], fieldnames: list[str]) -> None:
    """Write atomically so an interrupted write never leaves a truncated user file behind."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def append_captions(path: Path, rows: list[dict[str, str]], fieldnames: list[str]) -> None:
    """Add rows after the user's bytes, which stay exactly as they were (quoting, line endings)."""
    path = Path(path)
    old = path.read_bytes()
    newline = "\r\n" if b"\r\n" in old else "\n"
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=fieldnames, extrasaction="ignore", lineterminator=newline).writerows(rows)
    joint = b"" if not old or old.endswith((b"\n", b"\r")) else newline.encode()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(old + joint + buf.getvalue().encode("utf-8"))
    os.replace(tmp, path)


def member_path(base: Path, name: str) -> tuple[Path | None, str | None]:
    """``base/name`` if it stays inside ``base`` (also through symlinks), else why not."""
    if not name.strip():
        return None, "empty file name"
    if "\\" in name:
        return None, f"'{name}' uses '\\'; write paths with '/'"
    pure = PurePosixPath(name)
    if pure.is_absolute() or _DRIVE.match(name):
        return None, f"'{name}' is an absolute path; write it relative to {base}"
    if ".." in pure.parts:
        return None, f"'{name}' leaves the folder with '..'"
    path = base / name
    if not path.resolve().is_relative_to(base.resolve()):
        return None, f"'{name}' is a symlink that points outside {base}"
    return path, None


@dataclass(frozen=True)
class Columns:
    """Which source columns hold the image, the caption (answer), the prompt and a class label."""

    image: str | None = None
    caption: str | None = None
    prompt: str | None = None
    label: str | None = None

    def resolve(
        self, available: list[str], where: str, image_default: str = FILE_NAME, caption_aliases=CAPTION_ALIASES
    ) -> Columns:
        """Concrete column names: the chosen ones (which must exist), else the first alias present."""
        return Columns(
            image=_pick("image", self.image, (image_default,), available, where, required=True),
            caption=_pick("caption", self.caption, caption_aliases, available, where, required=True),
            prompt=_pick("prompt", self.prompt, PROMPT_ALIASES, available, where),
            label=_pick("label", self.label, LABEL_ALIASES, available, where),
        )


def _pick(role: str, chosen: str | None, aliases, available: list[str], where: str, required=False) -> str | None:
    if chosen:
        if chosen not in available:
            raise VlmtuneError(f"{where}: no column '{chosen}' (columns: {', '.join(available)}); fix --{role}-column")
        return chosen
    found = next((a for a in aliases if a in available), None)
    if required and found is None:
        raise VlmtuneError(
            f"{where}: no {role} column (looked for {', '.join(aliases)}; columns: {', '.join(available)}); "
            f"pass --{role}-column"
        )
    return found


def missing_reason(base: Path, name: str) -> str:
    """Why ``name`` is not found, naming the look-alike (decomposed accents, case, stray spaces)."""
    wanted = Path(name)
    folder = base / wanted.parent
    key = unicodedata.normalize("NFC", wanted.name.strip()).casefold()
    if folder.is_dir():
        for candidate in folder.iterdir():
            if unicodedata.normalize("NFC", candidate.name).casefold() == key:
                return f"image '{name}' not found; did you mean '{(wanted.parent / candidate.name).as_posix()}'?"
    return f"image '{name}' not found"
