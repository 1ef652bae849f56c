"""The training length with train.epochs=null: about train.step_budget optimizer steps, bounded."""

import pytest

from vlmtune.config import load_config
from vlmtune.errors import VlmtuneError
from vlmtune.training.schedule import MAX_EPOCHS, MIN_EPOCHS, augment_views, budget_epochs, scheduled, steps_per_epoch


def test_steps_per_epoch_counts_partial_batches_and_processes():
    assert steps_per_epoch(30, 8, 1) == 4  # 8 + 8 + 8 + 6
    assert steps_per_epoch(30, 8, 2) == 2
    assert steps_per_epoch(30, 8, 1, world=2) == 2
    assert steps_per_epoch(1, 8, 1) == 1


@pytest.mark.parametrize("rows, want", [
    (30, 30.0),  # 4 steps an epoch: 150 / 4 = 37.5, capped at 30
    (60, 19.0),  # 8 steps: 18.75 -> 19
    (120, 10.0),  # 15 steps: 10
    (352, 3.0),  # 44 steps: 3.4 -> 3
    (3000, 3.0),  # 375 steps: 0.4, raised to the floor of 3
])
def test_budget_epochs_by_data_size(rows, want):
    assert budget_epochs(150, rows, 8, 1) == want
    assert MIN_EPOCHS <= want <= MAX_EPOCHS


def test_null_epochs_follow_the_budget_and_explicit_settings_win():
    cfg = load_config(overrides=["train.batch_size=8"])  # null epochs is the default
    assert cfg.train.epochs is None and cfg.train.step_budget == 150
    chosen, line = scheduled(cfg, 120)
    assert chosen.train.epochs == 10.0 and cfg.train.epochs is None  # a copy: the user's config is untouched
    assert line.startswith("schedule: 120 train pictures, 15 steps an epoch -> 10 epochs, 150 steps")
    explicit, line = scheduled(load_config(overrides=["train.batch_size=8", "train.epochs=2"]), 120)
    assert explicit.train.epochs == 2.0 and line == "schedule: train.epochs=2 (30 steps of 15 an epoch)"
    steps, line = scheduled(load_config(overrides=["train.max_steps=7", "train.epochs=null"]), 120)
    assert steps.train.epochs is None and line == "schedule: train.max_steps=7"


def test_a_bad_budget_is_refused_in_one_line():
    with pytest.raises(VlmtuneError, match="train.step_budget"):
        load_config(overrides=["train.step_budget=0"])


@pytest.mark.parametrize("overrides,rows,views,says", [
    ([], 30, 4, "augmentation: on, 4 views of each picture (19 epochs >= 10"),  # 8 steps an epoch at batch 4
    ([], 352, 1, "augmentation: off (3 epochs < 10"),  # 88 steps an epoch: the budget's floor
    (["train.epochs=6"], 352, 1, "augmentation: off (6 epochs < 10"),
    (["train.epochs=10"], 352, 4, "(10 epochs >= 10"),
    (["train.max_steps=40"], 40, 1, "augmentation: off (4 epochs < 10"),  # 10 steps an epoch: max_steps is 4 epochs
])
def test_unset_views_follow_the_epochs(overrides, rows, views, says):
    cfg, line = augment_views(load_config(overrides=overrides), rows)
    assert cfg.data.augment.views == views and says in line


def test_set_views_win_and_say_nothing():
    cfg, line = augment_views(load_config(overrides=["data.augment.views=2"]), 30)
    assert cfg.data.augment.views == 2 and line is None
