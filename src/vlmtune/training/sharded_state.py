"""Complete-checkpoint checks for the layouts FSDP and DeepSpeed write (``checkpoints.checkpoint_problem``).

Under FSDP, Trainer writes the model and optimizer state with torch.distributed.checkpoint (one
``pytorch_model_fsdp_0/`` and ``optimizer_0/`` folder of ``*.distcp`` shards + ``.metadata``), or as
``pytorch_model_fsdp*.bin`` / ``optimizer*.bin`` with a full state dict. DeepSpeed writes
``global_stepN/`` (``*model_states.pt`` and one ``*optim_states.pt`` per process) named by a
``latest`` file, and owns the scheduler. A kill mid-save leaves a shard missing or truncated:
each file is opened far enough to notice, never loaded.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

FSDP_MODEL, FSDP_OPTIMIZER = "pytorch_model_fsdp", "optimizer"


def is_sharded_layout(folder: Path) -> bool:
    return bool(_fsdp_entries(folder, FSDP_MODEL) or (folder / "latest").is_file() or list(folder.glob("global_step*")))


def _zip_problem(path: Path) -> str | None:
    """torch.save files are zip archives: a truncated one has no central directory, a damaged member a bad CRC."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile) as err:
        return f"{path.name} unreadable ({type(err).__name__})"
    return f"{path.name}: member {bad} is damaged" if bad else None


def _dcp_problem(folder: Path) -> str | None:
    """A torch.distributed.checkpoint folder: its .metadata reads, and every byte range it names exists."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        metadata = FileSystemReader(str(folder)).read_metadata()
    except Exception as err:  # missing or truncated .metadata (pickle / OS errors)
        return f"{folder.name}/.metadata missing or unreadable ({type(err).__name__})"
    for item in (metadata.storage_data or {}).values():
        file = folder / item.relative_path
        if not file.is_file() or file.stat().st_size < item.offset + item.length:
            return f"{folder.name}/{item.relative_path} missing or truncated"
    return None


def _fsdp_entries(folder: Path, prefix: str) -> list[Path]:
    return sorted([*folder.glob(f"{prefix}_*"), *folder.glob(f"{prefix}*.bin")])


def _fsdp_problem(folder: Path, prefix: str) -> str | None:
    entries = _fsdp_entries(folder, prefix)
    if not entries:
        return f"no {prefix}* state"
    for entry in entries:
        problem = _dcp_problem(entry) if entry.is_dir() else _zip_problem(entry)
        if problem:
            return problem
    return None


def _deepspeed_problem(folder: Path) -> str | None:
    latest = folder / "latest"
    tag = latest.read_text().strip() if latest.is_file() else None
    steps = [folder / tag] if tag else sorted(folder.glob("global_step*"))
    if not steps or not steps[0].is_dir():
        return f"DeepSpeed state {tag or 'global_step*'} missing"
    files = sorted(steps[0].glob("*model_states.pt")) + sorted(steps[0].glob("*optim_states.pt"))
    if not any(f.name.endswith("model_states.pt") for f in files) or not any(f.name.endswith("optim_states.pt")
                                                                            for f in files):
        return f"{steps[0].name}: model or optimizer states missing"
    for file in files:
        problem = _zip_problem(file)
        if problem:
            return f"{steps[0].name}/{problem}"
    return None


def sharded_problem(folder: Path, weights_ok: Callable[[Path], bool]) -> str | None:
    """None when an FSDP / DeepSpeed checkpoint is complete (weights, optimizer, scheduler, RNG), else why not.

    ``weights_ok``: the safetensors check (adapter or model file) of ``checkpoints``; FSDP with a
    sharded state dict writes no adapter file, only its own model state."""
    deepspeed = (folder / "latest").is_file() or bool(list(folder.glob("global_step*")))
    try:
        has_file = weights_ok(folder)
    except Exception as err:  # safetensors raises its own error types for truncated files
        return f"weights unreadable ({str(err).splitlines()[0][:120]})"
    if deepspeed:
        problem = _deepspeed_problem(folder)
    else:
        problem = (None if has_file and not _fsdp_entries(folder, FSDP_MODEL) else _fsdp_problem(folder, FSDP_MODEL)) \
            or _fsdp_problem(folder, FSDP_OPTIMIZER)
        if problem is None and not (folder / "scheduler.pt").is_file():
            problem = "scheduler.pt missing"
    if problem is None and (folder / "scheduler.pt").is_file():
        problem = _zip_problem(folder / "scheduler.pt")
    if problem is None and not any(folder.glob("rng_state*.pth")):
        problem = "rng_state.pth missing"
    return problem
