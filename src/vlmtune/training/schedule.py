"""How long to train when the user did not say: a budget of optimizer steps, not a fixed 3 epochs.

Three epochs of 30 pictures at batch 8 are 12 steps, too few for LoRA and a fresh projector to
learn anything; three epochs of 3,000 pictures are 1,125, more than a small-data recipe needs.
With ``train.epochs=null`` (and no ``train.max_steps``), the epochs are chosen so that training
takes about ``train.step_budget`` optimizer steps, within [MIN_EPOCHS, MAX_EPOCHS]. Warmup is a
ratio of the steps, so it scales with them. Explicit settings always win.

Augmentation (data.augment.views unset) follows the epochs: on with AUGMENT_VIEWS views when a
run makes at least AUGMENT_MIN_EPOCHS passes, off below. The sweep in bench/README.md
("small-data recipe") is where both came from: with the budget and augmentation, every 30- and
60-picture set of three tasks (10 and 19 epochs) scored above 3 plain epochs and above the budget
alone; at 3 epochs augmentation was mixed (chess lost 0.02 to 0.09, counting and shapes gained),
and the demo's former set (352 pictures, 6 epochs) lost 0.03 with it (0.724 -> 0.697; held-out domain
0.580 -> 0.493).
"""

from __future__ import annotations

import math
from dataclasses import replace

from vlmtune.config import RunConfig
from vlmtune.training.distributed import world_size

MIN_EPOCHS = 3.0  # never fewer passes than the old default, however many pictures
MAX_EPOCHS = 30.0  # a few dozen pictures: beyond this the sweep saw no gain, only time
AUGMENT_MIN_EPOCHS = 10.0  # helped at 10 and 19 epochs; cost the demo at 3 and at 6 (bench/README.md)
AUGMENT_VIEWS = 4


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


def augment_views(cfg: RunConfig, rows: int) -> tuple[RunConfig, str | None]:
    """``cfg`` with data.augment.views decided (see the module doc), and the line that says how (None: set)."""
    aug = cfg.data.augment
    if aug.views is not None:
        return cfg, None
    t, per_epoch = cfg.train, steps_per_epoch(rows, cfg.train.batch_size, cfg.train.grad_accum, world_size())
    epochs = t.max_steps / per_epoch if t.max_steps > 0 else scheduled(cfg, rows)[0].train.epochs
    views = AUGMENT_VIEWS if epochs >= AUGMENT_MIN_EPOCHS else 1
    line = (f"augmentation: {'on, ' + str(views) + ' views of each picture' if views > 1 else 'off'} "
            f"({epochs:g} epochs {'>=' if views > 1 else '<'} {AUGMENT_MIN_EPOCHS:g}; set data.augment.views to choose)")
    return replace(cfg, data=replace(cfg.data, augment=replace(aug, views=views))), line
