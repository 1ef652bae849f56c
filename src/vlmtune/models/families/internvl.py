"""InternVL 3 / 3.5 in transformers format (OpenGVLab/InternVL3-*-hf): InternViT + pixel shuffle + MLP + Qwen2/Qwen3.

Module tree (counted on the real InternVL3-1B config in tests/unit/test_family_internvl.py):
- LM ``model.language_model``: q/k/v/o_proj + gate/up/down_proj.
- vision ``model.vision_tower`` (InternViT): ``attention.q_proj/k_proj/v_proj/projection_layer`` and
  ``mlp.fc1/fc2`` per layer; the patch embedding's Conv2d (leaf "projection") stays out.
- projector ``model.multi_modal_projector``: LayerNorm + linear_1 + linear_2 after the pixel shuffle.

Checked against transformers' internvl / got_ocr2 code:
- The processor crops a picture to 448 px tiles (GotOcr2 image processor, ``crop_to_patches`` on
  by the processor's defaults) on the grid of at most ``max_patches`` tiles closest to its aspect,
  plus a thumbnail when there is more than one tile: pixel_values [tiles, 3, 448, 448] (the collator
  concatenates them). Each tile is ``image_seq_length`` (256) <IMG_CONTEXT> tokens between <img> and
  </img>; the processor counts all three as image tokens (``image_token_ids``).
- The resolution knob is ``max_patches``: at most max_patches + 1 tiles (one when it is 1).
- logits_to_keep: the forward slices hidden states with ``slice_logits_to_keep``.
- feature_cache stays off: the model reads ``mm_encoder_outputs["image"].pooler_output`` as one
  tensor of every tile's features, while the cache hands a per-picture list and assumes one feature
  row per picture (training/features.py); tiles vary per picture.
- The stock processor insists on a video processor (torchvision): the row loads it without.
"""

from __future__ import annotations

from functools import cache

from vlmtune.errors import VlmtuneError
from vlmtune.models.families.llava import CLIP_LIKE_VISION
from vlmtune.models.families.qwen import chatml, images_only
from vlmtune.models.family import FamilyHooks, FamilySpec

# The InternVL3-hf template for pictures (ChatML, "<IMG_CONTEXT>\n" before the text), used only where a
# checkpoint's processor ships none.
INTERNVL_TEMPLATE = chatml("<IMG_CONTEXT>\\n")


@cache
def internvl_processor_class() -> type:
    """The stock InternVLProcessor less its video slot (that needs torchvision, absent beside CPU torch)."""
    from transformers import InternVLProcessor

    class InternVLImagesProcessor(images_only(InternVLProcessor)):
        def __init__(self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None,
                     **kwargs):
            # Named here because ProcessorMixin saves only __init__'s named arguments.
            super().__init__(image_processor, tokenizer, chat_template=chat_template, image_seq_length=image_seq_length,
                             **kwargs)

    return InternVLImagesProcessor


def tile_tokens(per_tile: int, max_patches: int) -> int:
    """Image tokens of the worst-case picture: max_patches tiles + a thumbnail (one tile alone when
    max_patches is 1), ``per_tile`` each, and the <img> </img> pair around them."""
    return (max_patches + 1 if max_patches > 1 else 1) * per_tile + 2


class InternVLHooks(FamilyHooks):
    def load_processor(self, path: str, offline: bool = False):
        return internvl_processor_class().from_pretrained(path, local_files_only=offline)

    def limit_image_tokens(self, processor, model_config, max_image_tokens: int) -> dict:
        """The most tiles that fit: max_patches = k gives at most k + 1 tiles of image_seq_length tokens.

        The checkpoint default (12) gives a 4032x3024 photo a 4x3 grid + thumbnail: 3,330 tokens.
        """
        per, images = processor.image_seq_length, processor.image_processor
        if tile_tokens(per, 1) > max_image_tokens:
            raise VlmtuneError(f"model.max_image_tokens={max_image_tokens}: InternVL needs at least "
                               f"{tile_tokens(per, 1)} image tokens per picture (one tile); raise it")
        k = images.max_patches
        while tile_tokens(per, k) > max_image_tokens:
            k -= 1
        images.max_patches, images.min_patches = k, min(images.min_patches, k)
        return {"max_patches": k, "image_tokens": tile_tokens(per, k)}


INTERNVL = FamilySpec(
    name="internvl",
    model_types=("internvl",),
    model_class="InternVLForConditionalGeneration",
    lm_prefix=r"model\.language_model",
    vision_prefix=r"model\.vision_tower",
    projector_modules=("model.multi_modal_projector",),
    vision_leaves=(*CLIP_LIKE_VISION, "projection_layer"),
    end_of_turn="<|im_end|>",
    stop_tokens=("<|endoftext|>",),
    chat_template=INTERNVL_TEMPLATE,
    hooks=InternVLHooks(),
    notes="InternVL3 / 3.5 -hf checkpoints (InternViT-300M/6B + Qwen2.5/Qwen3): 448 px tiles, 256 tokens each; pictures only",
    presets=("configs/internvl3-1b.yaml",),
    verified=(("OpenGVLab/InternVL3-1B-hf", "shapes"),),
)
