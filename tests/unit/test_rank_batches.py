"""What the collator gives each process, and why ZeRO-3 / FSDP cannot hang on it.

ZeRO-3 gathers a module's parameters when that module runs; a process that skips a module a
peer runs (a batch without pictures skipping the vision tower) leaves the peer waiting forever.
In vlmtune every row has a picture (the schema and `vlmtune data check` refuse rows without one),
so every per-process batch carries pixels (or cached features) and runs the same modules in the
same order; only the shapes differ (LLaVA-NeXT tile counts, Qwen patch counts), which ZeRO-3
and FSDP do not mind. These tests split one global batch between two "processes" and compare.
"""

from __future__ import annotations

import pytest
import torch

import families_tiny
from vlmtune.models.registry import family_for
from vlmtune.training.collate import Collator


def called_modules(model, batch) -> list[str]:
    """Names of the parameter-holding modules the forward runs, in call order."""
    seen: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=n: seen.append(name))
             for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    try:
        with torch.no_grad():
            model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return seen


# LLaVA-NeXT: the processor zero-pads every picture to the most tiles a pinpoint allows, and
# image_sizes tells the model how many are real; Qwen: a different patch count per picture.
@pytest.mark.parametrize("build, pixel_key, differs", [("llava_next", "pixel_values", "image_sizes"),
                                                       ("qwen2_vl", "pixel_values", "image_grid_thw")])
def test_two_processes_get_different_pictures_but_run_the_same_modules(build, pixel_key, differs):
    model, processor = families_tiny.BUILDERS[build]()
    spec = family_for(model.config.model_type)
    examples = families_tiny.examples(processor, spec)  # 56x56, 40x30, 30x60, 60x40 pictures
    collate = Collator(processor.tokenizer.pad_token_id, spec.seq_keys)
    ranks = [collate(examples[:2]), collate(examples[2:])]  # what each of 2 processes draws
    assert all(pixel_key in batch for batch in ranks)
    assert not torch.equal(ranks[0][differs], ranks[1][differs])  # real tiles / patches differ per process
    traces = [called_modules(model.eval(), batch) for batch in ranks]
    assert traces[0] == traces[1]
    assert any("vision" in name or "visual" in name for name in traces[0])


def test_every_single_row_batch_carries_its_picture():
    """The smallest per-process batch (one row) still has pixels: no rank can skip the vision tower."""
    model, processor = families_tiny.BUILDERS["llava_next"]()
    spec = family_for(model.config.model_type)
    collate = Collator(processor.tokenizer.pad_token_id, spec.seq_keys)
    for example in families_tiny.examples(processor, spec):
        batch = collate([example])
        assert batch["pixel_values"].shape[0] == 1 and batch["image_sizes"].shape == (1, 2)
