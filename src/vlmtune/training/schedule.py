"""How long to train when the user did not say: a budget of optimizer steps, not a fixed 3 epochs.

Three epochs of 30 pictures at batch 8 are 12 steps, too few for LoRA and a fresh projector to
learn anything; three epochs of 3,000 pictures are 1,125, more than a small-data recipe needs.
With ``train.epochs=null`` (and no ``train.max_steps``), the epochs are chosen so that training
takes about ``train.step_budget`` optimizer steps, within [MIN_EPOCHS, MAX_EPOCHS]. Warmup is a
ratio of the steps, so it scales with them. Explicit settings always win. It is not the default:
the sweep in bench/README.md ("small-data recipe") found it better on chess renders and worse on
shape and counting scenes, so the recipe is not fitted yet.
"""

from __future__ import annotations

import math
from dataclasses import replace

from vlmtune.config import RunConfig
from vlmtune.training.distributed import world_size

MIN_EPOCHS = 3.0  # never fewer passes than the old default, however many pictures
MAX_EPOCHS = 30.0  # a few dozen pictures: beyond this the sweep saw no gain, only time


def steps_per_epoch(rows: int, batch_size: int, grad_accum: int, world: int = 1) -> int:
    return max(1, math.ceil(rows / (batch_size * grad_accum * world)))


def budget_epochs(step_budget: int, rows: int, batch_size: int, grad_accum: int, world: int = 1) -> float:
    """Epochs that give about ``step_budget`` optimizer steps, rounded to a whole number and bounded."""
    per_epoch = steps_per_epoch(rows, batch_size, grad_accum, world)
    return float(min(MAX_EPOCHS, max(MIN_EPOCHS, round(step_budget / per_epoch))))


def scheduled(cfg: RunConfig, rows: int) -> tuple[RunConfig, str]:
    """``cfg`` with train.epochs decided, and the line that says how."""
    t = cfg.train
    world = world_size()
    per_epoch = steps_per_epoch(rows, t.batch_size, t.grad_accum, world)
    if t.max_steps > 0:
        return cfg, f"schedule: train.max_steps={t.max_steps}"
    if t.epochs is not None:
        return cfg, f"schedule: train.epochs={t.epochs:g} ({round(t.epochs * per_epoch)} steps of {per_epoch} an epoch)"
    epochs = budget_epochs(t.step_budget, rows, t.batch_size, t.grad_accum, world)
    line = (f"schedule: {rows} train pictures, {per_epoch} steps an epoch -> {epochs:g} epochs, "
            f"{round(epochs * per_epoch)} steps (train.step_budget={t.step_budget}, epochs within "
            f"[{MIN_EPOCHS:g}, {MAX_EPOCHS:g}]; set train.epochs to choose)")
    return replace(cfg, train=replace(t, epochs=epochs)), line
