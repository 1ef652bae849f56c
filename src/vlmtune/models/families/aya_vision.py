"""Aya Vision layout: a vision tower + a pixel-shuffle SwiGLU connector + an LM (AyaVisionForConditionalGeneration).

Two kinds of checkpoint have this module tree:
- the embedded default (models/default.py): DINOv2-S/14 + SmolLM2-135M, a ``LlavaProcessor``
  whose placeholder count is one token per 2x2 patch block, ChatML turns closed by <|im_end|> (EOS);
- Cohere's Aya Vision (SigLIP + Cohere2): ``AyaVisionProcessor`` tiles, a template that writes BOS
  itself and closes turns with <|END_OF_TURN_TOKEN|>. Checked on a tiny model of that kind in the
  shared family tests; no published Aya checkpoint was built here.

Module tree: LM ``model.language_model`` (q/k/v/o_proj + gate/up/down_proj); vision
``model.vision_tower`` (SigLIP q/k/v/out_proj + fc1/fc2; DINOv2 in transformers 5 the same
leaves); projector ``model.multi_modal_projector`` (pixel shuffle, LayerNorm, linear_1 SwiGLU,
linear_2), trained whole.

Feature cache: ``get_image_features`` takes plain ``pixel_values`` ([views, 3, H, W]: tiles are
views), the projector's input is the selected vision features, and the model scatters
``mm_encoder_outputs["image"].pooler_output`` as one [views, tokens, dim] tensor.
"""

import math

from vlmtune.errors import VlmtuneError
from vlmtune.models.families.llava import CLIP_LIKE_VISION
from vlmtune.models.family import FamilyHooks, FamilySpec, has_token

COHERE_END_OF_TURN = "<|END_OF_TURN_TOKEN|>"


def identity_logit_scale(text_config) -> None:
    """Give a Llama-style LM config the logit scale that Aya Vision's forward reads.

    From transformers 5.25 the Aya head multiplies its logits by ``text_config.logit_scale``, and only
    Cohere2 configs have one. The default's SmolLM2 config does not, so every forward would raise
    AttributeError. 1.0 is the identity, the same logits 5.24 gave. A config that already has a scale
    (Cohere's) keeps it."""
    if getattr(text_config, "logit_scale", None) is None:
        text_config.logit_scale = 1.0


class AyaVisionHooks(FamilyHooks):
    def end_of_turn(self, spec, tokenizer) -> str:
        """Cohere's turn token where the vocabulary has it (its EOS is a different token), else EOS.

        Asked for every encoded row, so a lookup (``get_vocab()`` here was 85 % of encoding a demo row)."""
        return COHERE_END_OF_TURN if has_token(tokenizer, COHERE_END_OF_TURN) else tokenizer.eos_token

    def for_model(self, spec, model, processor):
        """A default built and cached under transformers 5.24 has no logit scale in its config."""
        identity_logit_scale(model.config.text_config)
        return spec

    def limit_image_tokens(self, processor, model_config, max_image_tokens: int) -> dict:
        """The default's square input side from the budget: one token per ``patch_size`` block
        (the processor's 28 px = a 2x2 block of 14 px DINOv2 patches, which interpolates its
        position embeddings), so 224 px gives 64 tokens, 168 px 36, 112 px 16.

        Cohere's tiling processor has no single side to set: refused with a clear line.
        """
        images, block = processor.image_processor, getattr(processor, "patch_size", None)
        size = getattr(images, "size", None) or {}
        if not block or "height" not in size or hasattr(images, "crop_to_patches"):  # GotOcr2-style tiling
            raise VlmtuneError(f"model.max_image_tokens={max_image_tokens}: {type(processor).__name__} tiles pictures "
                               "and has no single resolution to set; leave model.max_image_tokens unset")
        now = min(size["height"], size["width"]) // block
        side = min(now, math.isqrt(max_image_tokens))
        if side < 1:
            raise VlmtuneError(f"model.max_image_tokens={max_image_tokens}: the default needs at least 1 image token")
        pixels = side * block
        images.size = {"height": pixels, "width": pixels}
        if getattr(images, "crop_size", None):
            images.crop_size = {"height": pixels, "width": pixels}
        return {"size": f"{pixels}x{pixels}", "image_tokens": side * side}


AYA_VISION = FamilySpec(
    name="aya_vision",
    model_types=("aya_vision",),
    model_class="AyaVisionForConditionalGeneration",
    lm_prefix=r"model\.language_model",
    vision_prefix=r"model\.vision_tower",
    projector_modules=("model.multi_modal_projector",),
    vision_leaves=CLIP_LIKE_VISION,
    # Cohere's template writes BOS and its tokenizer adds another; SmolLM2's adds none, so this is
    # a no-op for the default.
    processor_kwargs=(("add_special_tokens", False),),
    hooks=AyaVisionHooks(),
    feature_cache=True,
    pooled_as_tensor=True,
    notes="the embedded default (DINOv2 + pixel shuffle + SmolLM2) and Aya Vision (SigLIP + Cohere2)",
    presets=("configs/photos-default.yaml",),
    verified=(("default", "tokenizer+trained"),),
)
