"""Mistral 3 (Mistral-Small-3.1/3.2-24B, model_type mistral3): Pixtral vision, a patch-merging projector, Mistral LM.

Module tree (counted on the real 24B config in tests/unit/test_family_mistral3.py):
- LM ``model.language_model``: q/k/v/o_proj + gate/up/down_proj per layer (40).
- vision ``model.vision_tower`` (Pixtral, 24 layers): ``transformer.layers.N.attention.q/k/v/o_proj`` and
  ``feed_forward.gate/up/down_proj``; the patch embedding is a Conv2d.
- projector ``model.multi_modal_projector``: RMSNorm, ``patch_merger.merging_layer`` (2x2 patches to one),
  ``linear_1``, ``linear_2``.

Data, checked against transformers' mistral3 and pixtral code:
- Pictures keep their aspect ratio, resized so the longest edge is at most ``size["longest_edge"]``
  (1540 px), in 28 px steps (patch 14 x spatial merge 2). Each row of [IMG] tokens ends with
  [IMG_BREAK], the last one with [IMG_END]; image_sizes tells the vision tower where padding starts.
- The stock PixtralProcessor cannot be imported without torchvision (its module imports the
  torchvision image processor), and torchvision cannot be installed beside the CPU torch.
  ``pixtral_processor_class`` is its token expansion, method for method, over the stock
  PixtralImageProcessorPil; a run saves it as "PixtralProcessor", so AutoProcessor opens it elsewhere.
- The template writes <s>; the tokenizer would add another: add_special_tokens=False. The
  answer follows "[/INST]" directly (Tekken is byte-level BPE: no space) and ends with </s>.
- feature_cache stays off: the projector merges patches per picture from image_sizes, and the
  cache (training/features.py) calls it with the features alone.
- logits_to_keep: the forward slices hidden states with slice_logits_to_keep (boolean masks included).
"""

from __future__ import annotations

from functools import cache

from vlmtune.errors import VlmtuneError
from vlmtune.models.family import LLAMA_LEAVES, FamilyHooks, FamilySpec

# Mistral-Small-3.1's format without its dated default system prompt, for processors that ship no template.
MISTRAL3_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{- '[SYSTEM_PROMPT]' -}}{%- for part in message['content'] -%}{{- part['text'] -}}{%- endfor -%}"
    "{{- '[/SYSTEM_PROMPT]' -}}"
    "{%- elif message['role'] == 'user' -%}{{- '[INST]' -}}"
    "{%- for part in message['content'] -%}{%- if part['type'] == 'image' -%}{{- '[IMG]' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}{%- endfor -%}{{- '[/INST]' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{%- for part in message['content'] -%}{{- part['text'] -}}{%- endfor -%}{{- eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


@cache
def pixtral_processor_class() -> type:
    """transformers' PixtralProcessor (5.24) over the PIL image processor: the same attributes and
    token expansion; ProcessorMixin's __call__ does the rest, as it does for the stock class."""
    from transformers import ProcessorMixin

    class PixtralProcessor(ProcessorMixin):
        def __init__(self, image_processor=None, tokenizer=None, patch_size: int = 16, spatial_merge_size: int = 1,
                     chat_template=None, image_token="[IMG]", image_break_token="[IMG_BREAK]",
                     image_end_token="[IMG_END]", **kwargs):
            super().__init__(image_processor, tokenizer, chat_template=chat_template)
            self.patch_size = patch_size
            self.spatial_merge_size = spatial_merge_size
            self.image_token, self.image_break_token, self.image_end_token = image_token, image_break_token, image_end_token
            self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
            self.image_break_token_id = tokenizer.convert_tokens_to_ids(image_break_token)
            self.image_end_token_id = tokenizer.convert_tokens_to_ids(image_end_token)

        @property
        def image_token_ids(self) -> list[int]:
            return [self.image_token_id, self.image_break_token_id, self.image_end_token_id]

        def _process_images(self, images, **images_kwargs):
            images_kwargs["patch_size"] = self.patch_size * self.spatial_merge_size  # one token per merged patch
            return super()._process_images(images, **images_kwargs)

        def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
            step = self.patch_size * self.spatial_merge_size
            height, width = image_inputs["image_sizes"][image_idx]
            rows = [[self.image_token] * (width // step) + [self.image_break_token]] * (height // step)
            tokens = [token for row in rows for token in row]
            tokens[-1] = self.image_end_token
            return "".join(tokens)

        @property
        def model_input_names(self):
            return self.tokenizer.model_input_names + self.image_processor.model_input_names + ["image_sizes"]

    return PixtralProcessor


def picture_tokens(side_tokens: int) -> int:
    """Image tokens of a picture k merged patches on each side: k x k [IMG] + k row ends."""
    return side_tokens * (side_tokens + 1)


class Mistral3Hooks(FamilyHooks):
    def load_processor(self, path: str, offline: bool = False):
        return pixtral_processor_class().from_pretrained(path, local_files_only=offline)

    def limit_image_tokens(self, processor, model_config, max_image_tokens: int) -> dict:
        """size["longest_edge"] from the budget: the worst case is a square picture of k x k merged patches.

        The processor never enlarges a picture, and rounds each side up to whole 28 px steps, so
        k = ceil(longest_edge / 28) bounds every picture (the checkpoint's 1540 px: 3080 tokens).
        """
        # One token per merged patch, from the model config (the memory planner passes settings, not a processor).
        images, step = processor.image_processor, model_config.vision_config.patch_size * model_config.spatial_merge_size
        longest = images.size["longest_edge"]
        k = -(-longest // step)
        if picture_tokens(1) > max_image_tokens:
            raise VlmtuneError(f"model.max_image_tokens={max_image_tokens}: Mistral 3 needs at least "
                               f"{picture_tokens(1)} image tokens per picture; raise it")
        while picture_tokens(k) > max_image_tokens:
            k -= 1
            longest = k * step
        images.size = type(images.size)(longest_edge=longest)  # the processor's own SizeDict
        return {"longest_edge": longest, "image_tokens": picture_tokens(k)}


MISTRAL3 = FamilySpec(
    name="mistral3",
    model_types=("mistral3",),
    model_class="Mistral3ForConditionalGeneration",
    lm_prefix=r"model\.language_model",
    vision_prefix=r"model\.vision_tower",
    projector_modules=("model.multi_modal_projector",),
    lm_leaves=LLAMA_LEAVES,
    vision_leaves=LLAMA_LEAVES,  # Pixtral names its attention and SwiGLU projections like the LM
    chat_template=MISTRAL3_TEMPLATE,
    processor_kwargs=(("add_special_tokens", False),),
    hooks=Mistral3Hooks(),
    notes="Mistral-Small-3.1/3.2-24B (Pixtral vision, up to 1540 px, one token per 28 px, row breaks)",
    presets=("configs/mistral-small-3.1-24b.yaml",),
    verified=(("mistralai/Mistral-Small-3.1-24B-Instruct-2503", "shapes"),),
)
