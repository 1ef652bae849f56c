"""Prompt wordings: spread over the train rows (data.prompts), or one wording for a whole split.

A model tuned on one wording of the question scores worse under a paraphrase. Train rows that
ask the run's default question (data.prompt: the data brought none of its own) are each given one
of ``data.prompts``, chosen by a hash of the picture's bytes: the same on every rerun and whatever
the row order, and exact duplicates ask the same. Validation and test keep data.prompt, so the
before/after numbers stay comparable; ``with_prompt`` asks a whole split another wording (the
held-out paraphrase the report also scores).
"""

from __future__ import annotations

from vlmtune.data.dataset import bucket
from vlmtune.data.schema import PROMPT

SALT = "prompt:"  # a draw independent of the validation carve (same digests, other salt)


def pick_prompt(key: str, prompts: list[str]) -> str:
    """One of ``prompts`` for ``key`` (a picture digest), evenly in expectation; stable across runs."""
    return prompts[min(int(bucket(SALT + key) * len(prompts)), len(prompts) - 1)]


def vary_prompts(ds, keys: list[str], default: str, prompts: list[str]):
    """``ds`` with each row asking ``default`` given ``pick_prompt(key)``; other rows keep their own.

    ``keys``: one per row, in row order. One wording (or none) leaves ``ds`` untouched."""
    if len(prompts) < 2:
        return ds
    old = ds[PROMPT]
    new = [pick_prompt(k, prompts) if p == default else p for k, p in zip(keys, old, strict=True)]
    return ds if new == old else replace_prompts(ds, new)


def with_prompt(ds, prompt: str):
    """``ds`` with every row asking ``prompt``."""
    return replace_prompts(ds, [prompt] * len(ds))


def replace_prompts(ds, prompts: list[str]):
    """A new prompt column in the old one's place (column order kept; images are not re-encoded)."""
    order = ds.column_names
    return ds.remove_columns(PROMPT).add_column(PROMPT, prompts).select_columns(order)
