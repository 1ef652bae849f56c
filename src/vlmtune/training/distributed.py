"""Several processes (``accelerate launch`` / ``torchrun``): who writes the run dir, who evaluates.

Every process runs the same ``vlmtune train``; HF Trainer shards the batches and syncs gradients.
The run directory, the before/after evaluation and the report are the main process's alone: the
others train, then stop. Nothing here starts processes (accelerate or torchrun does).
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch

from vlmtune.errors import VlmtuneError

# The other processes wait while the main one evaluates the base model before training.
WAIT = timedelta(hours=6)


def world_size() -> int:
    """Processes the launcher started (1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched() -> bool:
    """Started by a distributed launcher (accelerate launch, torchrun, deepspeed)."""
    return world_size() > 1


def state():
    """accelerate's process state, set up once (gloo on CPUs, NCCL on GPUs) before the Trainer reuses it."""
    from accelerate import PartialState

    if not launched():
        return PartialState()
    return PartialState(cpu=not torch.cuda.is_available(), timeout=WAIT)


def is_main_process() -> bool:
    return not launched() or state().is_main_process


def wait_for_everyone() -> None:
    if launched():
        state().wait_for_everyone()


def sharded() -> str | None:
    """'fsdp' or 'zero3' when the launcher shards the parameters over the processes (None otherwise):
    then only a collective call can gather them (saving), and the trained model in memory is a shard."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "fsdp"
    if (os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
            and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"):
        return "zero3"
    return None


def check_launch(quantization: str, device_map: str | None) -> None:
    """Combinations that cannot work, refused before any model is loaded."""
    mode = sharded()
    if mode and quantization != "none":
        raise VlmtuneError(f"model.quantization={quantization} with {'FSDP' if mode == 'fsdp' else 'ZeRO-3'}: the 4-bit "
                           "weights are bitsandbytes tensors these shard-by-parameter launchers cannot split here; use "
                           "DDP (configs/accelerate/ddp.yaml) or ZeRO-2 with QLoRA, or model.quantization=none")
    if launched() and device_map is not None:
        raise VlmtuneError(f"model.device_map={device_map} splits one model over the GPUs inside one process; it "
                           "cannot be combined with several processes: run without accelerate launch/torchrun")


def save_trained(model, trainer, folder) -> None:
    """The trained weights (adapter, or the model for full/projector runs) into ``folder``.

    Sharded (FSDP / ZeRO-3): Trainer.save_model, a collective call that gathers the shards and
    writes on the main process. Otherwise the main process saves the model it holds."""
    mode = sharded()
    if mode == "fsdp":  # checkpoints stay sharded; the final weights are gathered whole (as PEFT's FSDP guide does)
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    if mode is not None:
        trainer.save_model(str(folder))
    elif is_main_process():
        model.save_pretrained(folder)
