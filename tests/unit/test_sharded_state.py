"""Complete-checkpoint checks for the FSDP and DeepSpeed layouts Trainer writes (training/sharded_state.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vlmtune.training.checkpoints import checkpoint_problem, newest_valid_checkpoint


def _common(folder: Path, scheduler: bool = True) -> None:
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    for rank in (0, 1):
        torch.save({"python": 1}, folder / f"rng_state_{rank}.pth")
    if scheduler:
        torch.save({"last_epoch": 1}, folder / "scheduler.pt")


def fsdp_sharded(folder: Path) -> Path:
    """SHARDED_STATE_DICT: model and optimizer as torch.distributed.checkpoint folders (no adapter file)."""
    import torch.distributed.checkpoint as dcp

    _common(folder)
    dcp.save({"model": {"w": torch.arange(4096.0), "b": torch.ones(8)}}, checkpoint_id=str(folder / "pytorch_model_fsdp_0"))
    dcp.save({"optimizer": {"exp_avg": torch.zeros(4096)}}, checkpoint_id=str(folder / "optimizer_0"))
    return folder


def fsdp_full(folder: Path) -> Path:
    _common(folder)
    save_file({"w": torch.ones(4)}, folder / "adapter_model.safetensors")
    torch.save({"w": torch.ones(4096)}, folder / "pytorch_model_fsdp.bin")
    torch.save({"state": {0: torch.zeros(4096)}}, folder / "optimizer.bin")
    return folder


def deepspeed(folder: Path, step: int = 3) -> Path:
    _common(folder, scheduler=False)  # DeepSpeed's engine keeps the scheduler in its model states
    save_file({"w": torch.ones(4)}, folder / "adapter_model.safetensors")
    states = folder / f"global_step{step}"
    states.mkdir()
    torch.save({"module": {"w": torch.ones(4096)}}, states / "mp_rank_00_model_states.pt")
    for rank in (0, 1):
        torch.save({"optimizer_state_dict": torch.zeros(4096)}, states / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    (folder / "latest").write_text(f"global_step{step}")
    return folder


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("build", [fsdp_sharded, fsdp_full, deepspeed])
def test_complete_layouts_pass(tmp_path, build):
    assert checkpoint_problem(build(tmp_path / "checkpoint-2")) is None


def test_a_truncated_fsdp_shard_is_skipped_for_the_older_checkpoint(tmp_path, capsys):
    older = fsdp_sharded(tmp_path / "checkpoint-2")
    newer = fsdp_sharded(tmp_path / "checkpoint-4")
    truncate(next((newer / "pytorch_model_fsdp_0").glob("*.distcp")))
    assert "missing or truncated" in checkpoint_problem(newer)
    assert newest_valid_checkpoint(tmp_path) == older
    assert "skipping" in capsys.readouterr().out


@pytest.mark.parametrize("damage, why", [
    (lambda c: (c / "optimizer_0" / ".metadata").unlink(), "optimizer_0/.metadata"),
    (lambda c: (c / "scheduler.pt").unlink(), "scheduler.pt missing"),
    (lambda c: [p.unlink() for p in c.glob("rng_state*")], "rng_state"),
])
def test_missing_fsdp_pieces_are_named(tmp_path, damage, why):
    folder = fsdp_sharded(tmp_path / "checkpoint-2")
    damage(folder)
    assert why in checkpoint_problem(folder)


def test_full_state_dict_files_are_opened_to_the_end(tmp_path):
    folder = fsdp_full(tmp_path / "checkpoint-2")
    truncate(folder / "optimizer.bin")
    assert "optimizer.bin unreadable" in checkpoint_problem(folder)


@pytest.mark.parametrize("damage, why", [
    (lambda c: truncate(c / "global_step3" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"), "rank_1"),
    (lambda c: [p.unlink() for p in (c / "global_step3").glob("*optim_states.pt")], "optimizer states missing"),
    (lambda c: (c / "latest").write_text("global_step9"), "global_step9 missing"),
])
def test_damaged_deepspeed_state_is_named(tmp_path, damage, why):
    folder = deepspeed(tmp_path / "checkpoint-3")
    damage(folder)
    assert why in checkpoint_problem(folder)


def test_plain_checkpoints_keep_their_own_check(tmp_path):
    """No FSDP/DeepSpeed file: optimizer.pt is still required (the check this module extends)."""
    folder = tmp_path / "checkpoint-1"
    _common(folder)
    save_file({"w": torch.ones(4)}, folder / "adapter_model.safetensors")
    assert "optimizer.pt" in checkpoint_problem(folder)
