"""The data a run trains, validates and tests on, opened from its config (train, evaluate, bench).

Test is for the before/after report only: eval loss and early stopping read the validation split,
which comes from the data or is carved off train (data/splits.py).
"""

from __future__ import annotations

from vlmtune.config import DataConfig, RunConfig, training_prompts
from vlmtune.data.build import load_eval_set, load_source
from vlmtune.data.captions import Columns
from vlmtune.data.check import CheckOptions
from vlmtune.data.prompts import vary_prompts
from vlmtune.data.schema import TEST, TRAIN, VALIDATION
from vlmtune.data.splits import carve, split_record
from vlmtune.errors import VlmtuneError


def open_dataset(cfg: RunConfig):
    """The configured data as a canonical DatasetDict: non-empty train and test, and validation
    when the data has one or ``cfg`` asks for eval loss (carved off train, see data/splits.py)."""
    return open_data(cfg)[0]


def open_data(cfg: RunConfig):
    """``(DatasetDict, record)``: ``open_dataset``'s splits and what data.json records about them."""
    if not cfg.data.path:
        raise VlmtuneError("data.path is not set: point it at a caption folder or a built dataset")
    d = cfg.data
    columns = Columns(image=d.image_column, caption=d.caption_column, prompt=d.prompt_column)
    data, _ = load_source(d.path, CheckOptions(columns=columns, prompt=d.prompt, test_ratio=d.test_ratio))
    if TRAIN not in data or len(data[TRAIN]) == 0:
        raise VlmtuneError(f"data.path={d.path}: the train split is empty")
    if TEST not in data or len(data[TEST]) == 0:
        raise VlmtuneError(f"data.path={d.path}: no test split; add split=test rows or raise data.test_ratio")
    return prompted(d, *carve(data, d.validation_ratio, wants_validation(cfg)))


def prompted(d: DataConfig, splits: dict, digests: dict, source: dict):
    """``(DatasetDict, record)`` with the train rows' wordings spread (data.prompts); after the
    carve, so validation and test keep data.prompt. The record's digest sees the prompts trained on."""
    from datasets import DatasetDict

    prompts = training_prompts(d)
    splits = {**splits, TRAIN: vary_prompts(splits[TRAIN], digests[TRAIN], d.prompt, prompts)}
    record = split_record(splits, digests, source)
    if len(prompts) > 1:
        record[TRAIN]["prompts"] = prompts
    return DatasetDict(splits), record


def wants_validation(cfg: RunConfig) -> bool:
    return cfg.train.eval_each_epoch or cfg.train.early_stopping_patience > 0


def validation_for(cfg: RunConfig, data):
    """The split eval loss and early stopping read (never test); None with a note, or a refusal."""
    if not wants_validation(cfg):
        return None
    if VALIDATION in data and len(data[VALIDATION]):
        return data[VALIDATION]
    why = ("data.validation_ratio=0" if cfg.data.validation_ratio == 0
           else f"train has {len(data[TRAIN])} picture(s), too few to carve one off")
    if cfg.train.early_stopping_patience > 0:
        raise VlmtuneError(
            f"train.early_stopping_patience={cfg.train.early_stopping_patience} needs a validation split and there is "
            f"none ({why}); add split=validation rows, raise data.validation_ratio or set train.early_stopping_patience=0"
        )
    print(f"note: no validation split ({why}): eval loss after each epoch is off")
    return None


def open_heldout_domain(d: DataConfig):
    """Every row of data.heldout_domain (asked data.prompt where it has no prompt column); None when unset."""
    if not d.heldout_domain:
        return None
    columns = Columns(image=d.image_column, caption=d.caption_column, prompt=d.prompt_column)
    try:
        rows = load_eval_set(d.heldout_domain, CheckOptions(columns=columns, prompt=d.prompt, test_ratio=d.test_ratio))
    except VlmtuneError as err:  # name the key: the path alone could be data.path's
        raise VlmtuneError(f"data.heldout_domain: {err}") from None
    if len(rows) == 0:
        raise VlmtuneError(f"data.heldout_domain={d.heldout_domain}: holds no rows")
    return rows
