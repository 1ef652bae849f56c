"""LLaVA-style families: a vision tower, a projector, and image tokens spliced into the LM input."""

from dataclasses import replace

from vlmtune.models.family import FamilyHooks, FamilySpec

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
    if "<|im_start|>" in tokenizer.get_vocab():
        return CHATML
    if config.get_text_config().model_type == "mistral":
        return INST
    return VICUNA


class LlavaHooks(FamilyHooks):
    """One row serves checkpoints with different LMs (Mistral [INST], Vicuna, Yi ChatML): pick from data."""

    def fallback_template(self, spec, config, tokenizer) -> str:
        return llava_template(config, tokenizer)


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
    notes="LLaVA-1.5 and the embedded default (DINOv2 + SmolLM2)",
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
    # The learned row separator between tile rows: trained with the projector it feeds.
    extra_trainable=("model.image_newline",),
    notes="LLaVA-NeXT / 1.6: Mistral-7B, Vicuna-7B/13B, Yi-34B",
)
