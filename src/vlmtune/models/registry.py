"""The model-family registry: every supported family is one explicit ``FamilySpec`` row.

A family is chosen from the checkpoint's ``config.model_type`` (or an explicit ``model.family``),
never from substrings of a model name. Adding a family = adding a row (in ``families/``) here
plus a tiny-config test.
"""

from __future__ import annotations

import re

from vlmtune.errors import VlmtuneError
from vlmtune.models.families.aya_vision import AYA_VISION
from vlmtune.models.families.gemma3 import GEMMA3
from vlmtune.models.families.idefics import IDEFICS, IDEFICS2, IDEFICS3, SMOLVLM
from vlmtune.models.families.internvl import INTERNVL
from vlmtune.models.families.lfm2_vl import LFM2_VL
from vlmtune.models.families.llava import LLAVA, LLAVA_NEXT
from vlmtune.models.families.llava_onevision import LLAVA_ONEVISION
from vlmtune.models.families.mistral3 import MISTRAL3
from vlmtune.models.families.mllama import MLLAMA
from vlmtune.models.families.paligemma import PALIGEMMA
from vlmtune.models.families.qwen import QWEN2_5_VL, QWEN2_VL
from vlmtune.models.families.qwen3_vl import QWEN3_VL
from vlmtune.models.family import FamilyHooks, FamilySpec
from vlmtune.models.generic import GENERIC, is_image_text_to_text

ROWS: tuple[FamilySpec, ...] = (
    LLAVA,
    LLAVA_NEXT,
    LLAVA_ONEVISION,
    QWEN2_VL,
    QWEN2_5_VL,
    QWEN3_VL,
    PALIGEMMA,
    GEMMA3,
    IDEFICS,
    IDEFICS2,
    IDEFICS3,
    SMOLVLM,
    MLLAMA,
    INTERNVL,
    MISTRAL3,
    LFM2_VL,
    AYA_VISION,
)
REGISTRY: dict[str, FamilySpec] = {spec.name: spec for spec in ROWS}
# Image-text-to-text types that neither a row nor the generic row can train, and why (checked on
# transformers 5.24 and 5.25): refused in one line instead of failing inside the model code.
UNSUPPORTED = {
    "llama4": "its routed experts are fused parameters (gate_up_proj, down_proj), not nn.Linear LoRA targets, and its "
              "image processor is torchvision-only; in transformers 5.24 its forward also raises AttributeError "
              "('MoeCausalLMOutputWithPast' has no 'image_outputs') on every call",
}


def family_for(model_type: str | None, explicit: str | None = None) -> FamilySpec | None:
    """The registry row for a checkpoint: by explicit name, else by ``config.model_type``.

    None means the generic row: no explicit row, but transformers maps the type to
    ``AutoModelForImageTextToText`` (or ``model.family=generic``); ``load_model`` then derives
    the row from the model's structure (models/generic.py).
    """
    if model_type in UNSUPPORTED and explicit in (None, GENERIC):
        raise VlmtuneError(f"model_type {model_type!r} cannot be fine-tuned here: {UNSUPPORTED[model_type]}")
    if explicit:
        if explicit == GENERIC:
            return None
        if explicit not in REGISTRY:
            raise VlmtuneError(f"model.family={explicit!r} is unknown; known families: {', '.join(sorted(REGISTRY))}, "
                               f"or {GENERIC} (read off the model's structure)")
        return REGISTRY[explicit]
    for spec in ROWS:
        if model_type in spec.model_types:
            return spec
    if is_image_text_to_text(model_type):
        return None
    known = sorted(t for s in ROWS for t in s.model_types)
    raise VlmtuneError(
        f"model_type {model_type!r} is not supported; supported: {', '.join(known)} (or set model.family); "
        "it is not an AutoModelForImageTextToText type either, so the generic row cannot serve it"
    )


def matching_modules(model, pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return [name for name, _ in model.named_modules() if regex.fullmatch(name)]


def family_table() -> list[dict]:
    """Every row as plain data for ``vlmtune families``: what it serves, supports, ships and was checked on."""
    rows = []
    for spec in ROWS:
        knob = type(spec.hooks).limit_image_tokens is not FamilyHooks.limit_image_tokens
        rows.append({
            "family": spec.name, "model_types": spec.model_types, "model_class": spec.model_class,
            "vision_lora": spec.vision_pattern() is not None, "projector": spec.projector_modules + spec.extra_trainable,
            "feature_cache": spec.feature_cache, "logits_to_keep": spec.logits_to_keep,
            "resolution": "mapped onto the processor" if knob else "fixed count, checked",
            "presets": spec.presets, "verified": spec.verified, "notes": spec.notes,
        })
    rows.append({
        "family": GENERIC, "model_types": ("any other AutoModelForImageTextToText type with a chat template",),
        "model_class": "read off the model", "vision_lora": True, "projector": ("read off the model",),
        "feature_cache": False, "logits_to_keep": False, "resolution": "refused (model.max_image_tokens unset)",
        "presets": (), "verified": (),
        "notes": "LM, vision tower and projector found in the module tree; tiny-tested on vipllava and, forced with model.family=generic, aya_vision",
    })
    return rows
