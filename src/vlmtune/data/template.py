"""``vlmtune data template``: a ``captions.csv`` to fill in, merged into the one already there.

Existing rows are never changed: new pictures are appended after the user's bytes. The only
rewrite is ``--prefill`` filling captions that are still empty, and it keeps a ``.bak`` copy.
"""

from __future__ import annotations

import shutil
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vlmtune.data.captions import append_captions, caption_columns, member_path, read_table, write_captions
from vlmtune.data.dataset import stable_split
from vlmtune.data.images import IMAGE_SUFFIXES, list_images, register_plugins
from vlmtune.data.schema import CAPTION, CAPTIONS_FILE, FILE_NAME, SPLIT
from vlmtune.errors import VlmtuneError


@dataclass
class TemplateResult:
    path: Path
    added: int = 0
    kept: int = 0
    captioned: int = 0  # rows with a caption after this run
    prefilled: int = 0
    splits: Counter = field(default_factory=Counter)  # proposed split of the added rows


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


# Drafts captions for image files (a model, run by the stage that passes it in): paths -> captions.
Captioner = Callable[[list[Path]], list[str]]


def write_template(
    folder: Path,
    test_ratio: float = 0.2,
    prefill: Captioner | None = None,
    prefill_name: str = "the captioner",
) -> TemplateResult:
    folder = Path(folder)
    if not folder.is_dir():
        raise VlmtuneError(f"{folder}: not a folder; pass the folder that holds your (converted) photos")
    path = folder / CAPTIONS_FILE
    table = read_table(path) if path.exists() else None
    header = table.header if table else [FILE_NAME, CAPTION, SPLIT]
    if table:
        caption_columns(table)
    old = table.rows if table else []
    listed = {_nfc(r[FILE_NAME]) for r in old}
    new = [
        {FILE_NAME: n, CAPTION: "", SPLIT: stable_split(n, test_ratio)}
        for n in list_images(folder)
        if _nfc(n) not in listed
    ]
    if not old and not new:
        raise VlmtuneError(f"{folder}: no pictures found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    result = TemplateResult(path, added=len(new), kept=len(old), splits=Counter(r[SPLIT] for r in new))
    filled = _prefill(folder, old + new, prefill, prefill_name, table) if prefill else []
    result.prefilled = len(filled)
    _save(path, table, old, new, header, rewrite=bool({id(r) for r in filled} & {id(r) for r in old}))
    result.captioned = sum(bool(r[CAPTION].strip()) for r in old + new)
    return result


def _save(path: Path, table, old: list[dict], new: list[dict], header: list[str], rewrite: bool) -> None:
    if table is None:
        write_captions(path, new, header)
    elif rewrite:
        shutil.copy2(path, path.with_name(path.name + ".bak"))
        write_captions(path, old + new, header)
    elif new:
        append_captions(path, new, header)


def _prefill(folder: Path, rows: list[dict], captioner: Captioner, name: str, table) -> list[dict]:
    """Model captions for rows whose caption is still empty; written captions are never touched."""
    todo = [r for r in rows if not r[CAPTION].strip() and _readable(folder, r[FILE_NAME])]
    if table and table.problems and {id(r) for r in todo} & {id(r) for r in table.rows}:
        line, message = table.problems[0]
        raise VlmtuneError(f"{table.path}:{line}: {message} (fix it before --prefill rewrites the file)")
    if not todo:
        return []
    register_plugins()  # the captioner opens the files with plain Pillow; HEIC needs the opener
    captions = captioner([folder / r[FILE_NAME] for r in todo])
    if len(captions) != len(todo):
        raise VlmtuneError(f"--prefill {name}: got {len(captions)} captions for {len(todo)} images")
    for row, caption in zip(todo, captions):
        row[CAPTION] = " ".join(str(caption).split())  # one line: a model's stray newlines help nobody
    return todo


def _readable(folder: Path, name: str) -> bool:
    path, problem = member_path(folder, name)
    return problem is None and path.is_file()
