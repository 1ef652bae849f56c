"""Synthetic caption folders (chess pictures, shape scenes) and their cache."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from vlmtune.paths import cache_root


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
