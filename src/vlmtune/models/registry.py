"""The model-family registry: one explicit ``FamilySpec`` row per supported architecture.

Everything that differs between families lives in these rows — never in ``if "llava" in name``
checks. A family is chosen from the checkpoint's ``config.model_type`` (or ``model.family``).
Module patterns are regexes matched against full module names (``re.fullmatch``), scoped to one
sub-model each, because vision towers and LMs share leaf names such as ``q_proj``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vlmtune.errors import VlmtuneError

LLAMA_LEAVES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class FamilySpec:
    """How vlmtune loads, prompts and fine-tunes one model family."""

    name: str
    model_types: tuple[str, ...]
    model_class: str  # attribute of ``transformers``
    lm_prefix: str  # regex of the language model's module path
    vision_prefix: str  # regex of the vision tower's module path
    projector_modules: tuple[str, ...]  # module paths trained/saved whole with the "projector" target
    lm_leaves: tuple[str, ...] = LLAMA_LEAVES
    vision_leaves: tuple[str, ...] = ()
    # Inputs the processor returns for images, forwarded to the model (and kept in the collator).
    image_inputs: tuple[str, ...] = ("pixel_values",)
    # The end-of-turn string that closes an assistant answer; None = the tokenizer's EOS.
    end_of_turn: str | None = None
    # Used only when the processor ships no chat template of its own.
    chat_template: str | None = None
    # Frozen vision features can be computed once per image and fed back via mm_encoder_outputs.
    feature_cache: bool = False
    # Extra modules saved whole when asked (e.g. LLaVA-NeXT image_newline); see lora.py.
    extra_trainable: tuple[str, ...] = field(default_factory=tuple)

    def lm_pattern(self) -> str:
        return rf"{self.lm_prefix}\.(.*\.)?({'|'.join(self.lm_leaves)})"

    def vision_pattern(self) -> str | None:
        if not self.vision_leaves:
            return None
        return rf"{self.vision_prefix}\.(.*\.)?({'|'.join(self.vision_leaves)})"


LLAVA = FamilySpec(
    name="llava",
    model_types=("llava",),
    model_class="LlavaForConditionalGeneration",
    lm_prefix=r"model\.language_model",
    vision_prefix=r"model\.vision_tower",
    projector_modules=("model.multi_modal_projector",),
    # CLIP (llava-1.5) names its projections q/k/v/out_proj + fc1/fc2; DINOv2 uses q/k/v/o_proj.
    vision_leaves=("q_proj", "k_proj", "v_proj", "o_proj", "out_proj", "fc1", "fc2"),
    feature_cache=True,
)

REGISTRY: dict[str, FamilySpec] = {spec.name: spec for spec in (LLAVA,)}


def family_for(model_type: str | None, explicit: str | None = None) -> FamilySpec:
    """The registry row for a checkpoint: by explicit name, else by ``config.model_type``."""
    if explicit:
        if explicit not in REGISTRY:
            raise VlmtuneError(f"model.family={explicit!r} is unknown; known families: {', '.join(sorted(REGISTRY))}")
        return REGISTRY[explicit]
    for spec in REGISTRY.values():
        if model_type in spec.model_types:
            return spec
    known = sorted(t for s in REGISTRY.values() for t in s.model_types)
    raise VlmtuneError(
        f"model_type {model_type!r} is not supported; supported: {', '.join(known)} (or set model.family)"
    )


def matching_modules(model, pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return [name for name, _ in model.named_modules() if regex.fullmatch(name)]
