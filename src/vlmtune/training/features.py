"""Frozen-vision feature cache: run the vision tower once per image instead of once per step.

With the vision tower frozen (no vision LoRA) its output for a picture never changes, and on a
CPU it is most of a training step. We compute the selected vision features once with the
family's own ``get_image_features`` (projector bypassed, so layer selection and CLS handling are
exactly the model's), then feed ``projector(features)`` back through the public
``mm_encoder_outputs`` argument of the model's forward.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from tqdm.auto import tqdm

from vlmtune.models.family import FamilySpec

FEATURES = "vision_features"


def unwrap(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextmanager
def projector_bypassed(model, spec: FamilySpec):
    parent_path, _, leaf = spec.projector_modules[0].rpartition(".")
    parent = model.get_submodule(parent_path)
    original = getattr(parent, leaf)
    setattr(parent, leaf, nn.Identity())
    try:
        yield
    finally:
        setattr(parent, leaf, original)


@torch.no_grad()
def compute_features(model, spec: FamilySpec, examples: list[dict], batch_size: int = 16) -> None:
    """Replace each example's ``pixel_values`` by its selected vision features, in place."""
    base = unwrap(model)
    device, dtype = base.device, next(base.model.vision_tower.parameters()).dtype
    with projector_bypassed(base, spec):
        for start in tqdm(range(0, len(examples), batch_size), desc="vision features", unit="batch"):
            chunk = examples[start : start + batch_size]
            pixels = torch.cat([e.pop("pixel_values") for e in chunk]).to(device, dtype)
            feats = base.model.get_image_features(pixel_values=pixels).pooler_output
            for e, f in zip(chunk, feats):
                e[FEATURES] = f.unsqueeze(0).float().cpu()


def encoder_outputs(model, spec: FamilySpec, features: torch.Tensor) -> dict:
    """``mm_encoder_outputs`` for a batch of cached features: the (trainable) projector applied."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    projector = unwrap(model).get_submodule(spec.projector_modules[0])
    projected = projector(features.to(next(projector.parameters()).dtype))
    return {"image": BaseModelOutputWithPooling(pooler_output=list(projected))}
