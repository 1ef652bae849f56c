"""LLaVA-OneVision (llava-hf/llava-onevision-qwen2-0.5b/7b/72b, ov and si): SigLIP + Qwen2, any-resolution tiles.

Module tree (counted on the real 7B config in tests/unit/test_family_llava_onevision.py): LM
``model.language_model`` (Qwen2: q/k/v/o_proj + MLP), vision ``model.vision_tower`` (SigLIP-so400m cut
to 26 layers: q/k/v/out_proj + fc1/fc2), projector ``model.multi_modal_projector`` and the bare
``model.image_newline`` row separator (trained with the projector, as in LLaVA-NeXT).

Checked against transformers' llava_onevision code:
- A picture becomes a 384 px base view + tiles on one of 36 grid pinpoints (up to 6x6); its
  features are unpadded to the picture's aspect, one image_newline per feature row, and
  "anyres_max_9" scales them down past ~9 tiles' worth. The processor counts the same way
  (``_get_number_of_features``), so the resolution knob keeps the pinpoints whose worst case fits,
  in the processor and in the model config the model tiles with (as the llava_next row does).
- Pixel inputs are [batch, tiles, 3, H, W] + image_sizes; the collator zero-pads tile counts and
  the model reads the real count from image_sizes.
- logits_to_keep: the forward slices hidden states with ``slice_logits_to_keep``.
- feature_cache stays off: the model packs per-picture features with image_newline by image size
  after the projector, which the cache's projector-only replay (training/features.py) skips.
- The processor's video half needs torchvision: the row loads it without (``images_only``).
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

from vlmtune.models.families.llava import LLAVA_NEXT, LlavaNextHooks
from vlmtune.models.families.qwen import images_only
from vlmtune.models.family import FamilyHooks

# The llava-hf OneVision template for pictures ("<|im_start|>user <image>\n...<|im_end|>"), used only
# where a checkpoint's processor ships none.
ONEVISION_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + ' ' -}}"
    "{%- for part in message['content'] if part['type'] == 'image' -%}{{- '<image>' -}}{%- endfor -%}"
    "{%- for part in message['content'] if part['type'] == 'text' -%}{{- '\\n' + part['text'] -}}{%- endfor -%}"
    "{{- '<|im_end|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


@cache
def onevision_processor_class() -> type:
    """The stock LlavaOnevisionProcessor less its video slot (that needs torchvision, absent beside CPU torch)."""
    from transformers import LlavaOnevisionProcessor

    class LlavaOnevisionImagesProcessor(images_only(LlavaOnevisionProcessor)):
        def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                     vision_feature_select_strategy=None, chat_template=None, image_token="<image>",
                     video_token="<video>", vision_aspect_ratio="anyres_max_9", **kwargs):
            # Named here because ProcessorMixin saves only __init__'s named arguments: a run's saved
            # processor must keep the checkpoint's token count, strategy and aspect-ratio cap.
            super().__init__(image_processor, tokenizer, chat_template=chat_template, num_image_tokens=num_image_tokens,
                             vision_feature_select_strategy=vision_feature_select_strategy, image_token=image_token,
                             video_token=video_token, vision_aspect_ratio=vision_aspect_ratio, **kwargs)

    return LlavaOnevisionImagesProcessor


class OnevisionHooks(LlavaNextHooks):
    label = "LLaVA-OneVision"

    def load_processor(self, path: str, offline: bool = False):
        return onevision_processor_class().from_pretrained(path, local_files_only=offline)

    def fallback_template(self, spec, config, tokenizer) -> str:
        return FamilyHooks.fallback_template(self, spec, config, tokenizer)  # the row's, not LLaVA's pick

    def tile(self, processor) -> int:
        return processor.image_processor.size["height"]

    def pinpoint_tokens(self, processor, pinpoint: list[int]) -> int:
        """A picture of exactly the pinpoint's aspect loses nothing to unpadding: the worst case, counted
        by the processor's own rule (base view, unpadded grid, newlines, the anyres_max cap)."""
        tile = self.tile(processor)
        count = processor._get_number_of_features(pinpoint[0], pinpoint[1], tile, tile)
        return count - (processor.vision_feature_select_strategy == "default")


LLAVA_ONEVISION = replace(
    LLAVA_NEXT,
    name="llava_onevision",
    model_types=("llava_onevision",),
    model_class="LlavaOnevisionForConditionalGeneration",
    end_of_turn="<|im_end|>",
    stop_tokens=("<|endoftext|>",),  # Qwen2's EOS in the base checkpoints
    chat_template=ONEVISION_TEMPLATE,
    hooks=OnevisionHooks(),
    notes="LLaVA-OneVision 0.5B/7B/72B (ov, si): SigLIP + Qwen2, 384 px tiles on up to 6x6 grids, anyres_max_9; pictures only",
    presets=("configs/llava-onevision-qwen2-7b.yaml",),  # not LLaVA-NeXT's (replace() would inherit them)
    verified=(("llava-hf/llava-onevision-qwen2-7b-ov-hf", "shapes"),),
)
