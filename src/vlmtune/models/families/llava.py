"""LLaVA-style families: a vision tower, a projector, and image tokens spliced into the LM input."""

from dataclasses import replace

from vlmtune.errors import VlmtuneError
from vlmtune.models.family import FamilyHooks, FamilySpec, has_token

# CLIP (llava-1.5) names its projections q/k/v/out_proj + fc1/fc2; DINOv2 (the embedded default)
# uses q/k/v/o_proj + fc1/fc2. Scoped to the vision tower by prefix, so no LM module can match.
CLIP_LIKE_VISION = ("q_proj", "k_proj", "v_proj", "o_proj", "out_proj", "fc1", "fc2")

# Fallback chat templates, in the prompt formats the LLaVA checkpoints were trained with. Only used
# when a checkpoint's processor ships no template; images first, then the text of the turn.
_IMAGES = "{%- for part in message['content'] if part['type'] == 'image' -%}{{- '<image>\\n' -}}{%- endfor -%}"
_TEXTS = "{%- for part in message['content'] if part['type'] == 'text' -%}{{- part['text'] -}}{%- endfor -%}"

# Vicuna v1 (llava-1.5, llava-v1.6-vicuna): "USER: <image>\n... ASSISTANT:" (as llava-1.5-hf ships it).
VICUNA = (
    "{%- for message in messages -%}"
    "{%- if message['role'] != 'system' -%}{{- message['role'].upper() + ': ' -}}{%- endif -%}"
    + _IMAGES + _TEXTS + "{{- ' ' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)
# Llama-2 / Mistral instruct (llava-v1.6-mistral): "[INST] <image>\n... [/INST]".
INST = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{- '[INST] ' -}}" + _IMAGES + _TEXTS + "{{- ' [/INST]' -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- ' ' -}}" + _TEXTS + "{{- eos_token -}}{%- endif -%}"
    "{%- endfor -%}"
)
# ChatML as LLaVA's "chatml_direct" (llava-v1.6-34b, Nous-Hermes-2-Yi): fixed system turn, no newlines
# between turns.
CHATML = (
    "{{- '<|im_start|>system\\nAnswer the questions.<|im_end|>' -}}"
    "{%- for message in messages if message['role'] != 'system' -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}" + _IMAGES + _TEXTS + "{{- '<|im_end|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def llava_template(config, tokenizer) -> str:
    """The fallback template from data: ChatML tokens in the vocabulary, else the LM's model_type."""
    if has_token(tokenizer, "<|im_start|>"):
        return CHATML
    if config.get_text_config().model_type == "mistral":
        return INST
    return VICUNA


class LlavaHooks(FamilyHooks):
    """One row serves checkpoints with different LMs (Mistral [INST], Vicuna, Yi ChatML): pick from data."""

    def fallback_template(self, spec, config, tokenizer) -> str:
        return llava_template(config, tokenizer)


def anyres_tokens(processor, pinpoint: list[int]) -> int:
    """The most image tokens a picture tiled onto ``pinpoint`` [height, width] can get.

    As LlavaNextProcessor counts them: the base view, then the tile grid's features with one
    image_newline per feature row. A picture of exactly the pinpoint's aspect loses nothing to
    unpadding, so it is the worst case.
    """
    tile = processor.image_processor.crop_size["height"]
    side = tile // processor.patch_size
    rows, cols = side * (pinpoint[0] // tile), side * (pinpoint[1] // tile)
    base = side * side + processor.num_additional_image_tokens - (processor.vision_feature_select_strategy == "default")
    return base + rows * cols + rows


class LlavaNextHooks(LlavaHooks):
    label = "LLaVA-NeXT"

    def tile(self, processor) -> int:
        return processor.image_processor.crop_size["height"]

    def pinpoint_tokens(self, processor, pinpoint: list[int]) -> int:
        """The most image tokens a picture tiled onto ``pinpoint`` can get."""
        return anyres_tokens(processor, pinpoint)

    def limit_image_tokens(self, processor, model_config, max_image_tokens: int) -> dict:
        """Keep the grid pinpoints whose tiles fit; the model reads them from its config, so both change."""
        pinpoints = [list(p) for p in processor.image_processor.image_grid_pinpoints]
        fits = [p for p in pinpoints if self.pinpoint_tokens(processor, p) <= max_image_tokens]
        if not fits:  # one tile beside the base view: the smallest any-resolution layout
            tile = self.tile(processor)
            fits = [[tile, tile]]
            if self.pinpoint_tokens(processor, fits[0]) > max_image_tokens:
                raise VlmtuneError(f"model.max_image_tokens={max_image_tokens}: {self.label} needs at least "
                                   f"{self.pinpoint_tokens(processor, fits[0])} image tokens per picture (base view + "
                                   f"one {tile} px tile); raise it")
        processor.image_processor.image_grid_pinpoints = fits
        model_config.image_grid_pinpoints = fits
        return {"image_grid_pinpoints": fits, "image_tokens": max(self.pinpoint_tokens(processor, p) for p in fits)}


LLAVA = FamilySpec(
    name="llava",
    model_types=("llava",),
    model_class="LlavaForConditionalGeneration",
    lm_prefix=r"model\.language_model",
    vision_prefix=r"model\.vision_tower",
    projector_modules=("model.multi_modal_projector",),
    vision_leaves=CLIP_LIKE_VISION,
    hooks=LlavaHooks(),
    feature_cache=True,
    notes="LLaVA-1.5, and the embedded default's LLaVA layout (DINOv2 + SmolLM2, pixel_shuffle=1: the benchmark's A/B)",
    presets=("configs/llava-1.5-7b.yaml",),
    verified=(("llava-hf/llava-1.5-7b-hf", "shapes+tokenizer"), ("llava-hf/llava-1.5-13b-hf", "shapes"),
              ("default", "tokenizer+trained")),
)

# Any-resolution tiling: a base view + tiles per image (pixel_values [batch, tiles, 3, H, W] with
# image_sizes; the collator zero-pads tile counts, the model reads the real count from image_sizes).
# The cached-feature path does not apply: features are packed with image_newline per image size.
LLAVA_NEXT = replace(
    LLAVA,
    name="llava_next",
    model_types=("llava_next",),
    model_class="LlavaNextForConditionalGeneration",
    feature_cache=False,
    hooks=LlavaNextHooks(),
    # The learned row separator between tile rows: trained with the projector it feeds.
    extra_trainable=("model.image_newline",),
    notes="LLaVA-NeXT / 1.6: Mistral-7B, Vicuna-7B/13B, Yi-34B",
    presets=("configs/llava-next-mistral-7b.yaml",),
    verified=(("llava-hf/llava-v1.6-mistral-7b-hf", "shapes+tokenizer"), ("llava-hf/llava-v1.6-vicuna-7b-hf", "shapes"),
              ("llava-hf/llava-v1.6-34b-hf", "shapes")),
)
