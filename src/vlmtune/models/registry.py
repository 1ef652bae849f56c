"""The model-family registry: every supported family is one explicit ``FamilySpec`` row.

A family is chosen from the checkpoint's ``config.model_type`` (or an explicit ``model.family``),
never from substrings of a model name. Adding a family = adding a row (in ``families/``) here
plus a tiny-config test.
"""

from __future__ import annotations

import re

from vlmtune.errors import VlmtuneError
from vlmtune.models.families.idefics import IDEFICS, IDEFICS2, IDEFICS3, SMOLVLM
from vlmtune.models.families.llava import LLAVA, LLAVA_NEXT
from vlmtune.models.families.mllama import MLLAMA
from vlmtune.models.families.paligemma import PALIGEMMA
from vlmtune.models.families.qwen import QWEN2_5_VL, QWEN2_VL
from vlmtune.models.family import FamilySpec

ROWS: tuple[FamilySpec, ...] = (
    LLAVA,
    LLAVA_NEXT,
    QWEN2_VL,
    QWEN2_5_VL,
    PALIGEMMA,
    IDEFICS,
    IDEFICS2,
    IDEFICS3,
    SMOLVLM,
    MLLAMA,
)
REGISTRY: dict[str, FamilySpec] = {spec.name: spec for spec in ROWS}


def family_for(model_type: str | None, explicit: str | None = None) -> FamilySpec:
    """The registry row for a checkpoint: by explicit name, else by ``config.model_type``."""
    if explicit:
        if explicit not in REGISTRY:
            raise VlmtuneError(f"model.family={explicit!r} is unknown; known families: {', '.join(sorted(REGISTRY))}")
        return REGISTRY[explicit]
    for spec in ROWS:
        if model_type in spec.model_types:
            return spec
    known = sorted(t for s in ROWS for t in s.model_types)
    raise VlmtuneError(
        f"model_type {model_type!r} is not supported; supported: {', '.join(known)} (or set model.family)"
    )


def matching_modules(model, pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return [name for name, _ in model.named_modules() if regex.fullmatch(name)]
