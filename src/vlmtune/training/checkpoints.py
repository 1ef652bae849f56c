"""Which checkpoint to resume from, and whether there is room to write one.

A process killed mid-save (``kill -9``, power loss) leaves a ``checkpoint-N`` folder with
missing or truncated files, and ``Trainer`` would happily pick it as the newest. We only resume
from a checkpoint whose every state file opens: trainer state, weights, optimizer, scheduler
and RNG state. Invalid ones are reported and skipped, never loaded and never deleted.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from vlmtune.errors import VlmtuneError

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors")


def _weights_ok(folder: Path) -> bool:
    from safetensors import safe_open

    for name in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # reading every tensor catches truncation past the header
                    f.get_tensor(key)
            return True
    return False


def checkpoint_problem(folder: Path) -> str | None:
    """None when the checkpoint is complete, else why not."""
    try:
        json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "trainer_state.json missing or unreadable"
    try:
        if not _weights_ok(folder):
            return "no weights file"
    except Exception as err:  # safetensors raises its own error types for truncated files
        return f"weights unreadable ({str(err).splitlines()[0][:80]})"
    for name in ("optimizer.pt", "scheduler.pt"):
        try:
            torch.load(folder / name, map_location="cpu", weights_only=True)
        except Exception as err:
            return f"{name} missing or unreadable ({type(err).__name__})"
    if not any(folder.glob("rng_state*.pth")):
        return "rng_state.pth missing"
    return None


def newest_valid_checkpoint(folder: Path) -> Path | None:
    """The highest-numbered complete checkpoint in ``folder``; incomplete ones are reported."""
    found = sorted(
        ((int(m.group(1)), p) for p in Path(folder).glob("checkpoint-*") if (m := _CHECKPOINT.match(p.name))),
        reverse=True,
    )
    for _, path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        print(f"skipping {path}: incomplete ({problem}); probably interrupted while saving")
    return None


def require_disk_room(folder: Path, trainable: int, total: int, full: bool, copies: int = 2) -> None:
    """Refuse to start when the disk cannot hold the checkpoints the run will write."""
    # Adapter (or full model) in fp32 plus Adam's two moments for the trainable part.
    need = (total * 4 if full else trainable * 4) + trainable * 8
    need = int(need * copies * 1.1)
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise VlmtuneError(
            f"{folder}: {free / 2**20:.0f} MB free but checkpoints need about {need / 2**20:.0f} MB; "
            "free disk space, point output_dir elsewhere, or set train.save_steps=-1 (no checkpoints)"
        )
