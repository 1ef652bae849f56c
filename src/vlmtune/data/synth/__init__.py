"""Synthetic caption folders (chess pictures, shape scenes) and their cache."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from vlmtune.data.captions import write_captions
from vlmtune.errors import VlmtuneError
from vlmtune.paths import cache_root


def write_scenes(out: Path, n: int, test_ratio: float, stem: str, scene: Callable[[int], tuple]) -> Path:
    """``out/images/<stem>_NNNNN.png`` and ``out/captions.csv`` (file_name, caption, split) for
    ``scene(i) -> (image, caption)``; the first ``round(n * test_ratio)`` pictures are the test split."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise VlmtuneError(f"{out}: folder is not empty; choose a new output folder")
    (out / "images").mkdir(parents=True, exist_ok=True)
    n_test = round(n * test_ratio)
    rows = []
    for i in range(n):
        img, caption = scene(i)
        name = f"images/{stem}_{i:05d}.png"
        img.save(out / name)
        rows.append({"file_name": name, "caption": caption, "split": "test" if i < n_test else "train"})
    write_captions(out / "captions.csv", rows, ["file_name", "caption", "split"])
    return out


def cached_set(kind: str, recipe: dict, make: Callable[[Path], object]) -> Path:
    """A generated caption folder, made once per recipe and reused (demo and align re-runs).

    ``make(folder)`` writes into a ``.partial`` sibling that is renamed only when complete, so an
    interrupted run never leaves a half set that a later run would take for finished.
    """
    key = hashlib.sha256(f"{kind}:{sorted(recipe.items())}".encode()).hexdigest()[:12]
    folder = cache_root() / "synth" / f"{kind}-{key}"
    if not (folder / "captions.csv").is_file():
        tmp = folder.with_name(folder.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        make(tmp)
        tmp.rename(folder)
    return folder
