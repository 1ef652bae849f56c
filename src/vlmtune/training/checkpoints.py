"""Which checkpoint to resume from, and whether there is room to write one.

A process killed mid-save (``kill -9``, power loss) leaves a ``checkpoint-N`` folder with
missing or truncated files, and ``Trainer`` would happily pick it as the newest. We only resume
from a checkpoint whose every state file opens: trainer state, weights, optimizer, scheduler
and RNG state (weights may be one file or the shards of a ``*.safetensors.index.json``).
Invalid ones are reported and skipped, never loaded and never deleted.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from vlmtune.errors import VlmtuneError
from vlmtune.training.sharded_state import is_sharded_layout, sharded_problem

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors")
INDEX_SUFFIX = ".index.json"  # model.safetensors.index.json: the weight map of a sharded save


def _read_all(path: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        for key in keys:  # reading every tensor catches truncation past the header
            f.get_tensor(key)
    return keys


def _weights_ok(folder: Path) -> bool:
    """One weights file, or the shards its ``*.index.json`` lists (transformers shards large
    models): every shard must open in full and hold every tensor the index names."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            _read_all(folder / name)
            return True
        index = folder / f"{name}{INDEX_SUFFIX}"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            found = set()
            for shard in sorted(set(weight_map.values())):
                if not (folder / shard).is_file():
                    raise FileNotFoundError(f"shard {shard} listed in {index.name} is missing")
                found |= _read_all(folder / shard)
            missing = sorted(set(weight_map) - found)
            if missing:
                raise ValueError(f"{len(missing)} tensor(s) listed in {index.name} are in no shard (first: {missing[0]})")
            return True
    return False


def checkpoint_problem(folder: Path) -> str | None:
    """None when the checkpoint is complete, else why not."""
    try:
        json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "trainer_state.json missing or unreadable"
    if is_sharded_layout(folder):  # FSDP / DeepSpeed write their own state files (training/sharded_state.py)
        return sharded_problem(folder, _weights_ok)
    try:
        if not _weights_ok(folder):
            return "no weights file"
    except Exception as err:  # safetensors raises its own error types for truncated files
        return f"weights unreadable ({str(err).splitlines()[0][:120]})"
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
