"""Qwen2-VL and Qwen2.5-VL: dynamic resolution (image_grid_thw) and M-RoPE position ids.

The processor flattens each picture into patches (pixel_values [patches, C*T*P*P], no batch dim:
the collator concatenates them) and emits ``mm_token_type_ids`` beside input_ids; the model builds
its 3D (M-RoPE) position ids from those and image_grid_thw, so they travel as a sequence key.
"""

from __future__ import annotations

from functools import cache

from vlmtune.errors import VlmtuneError
from vlmtune.models.family import LLAMA_LEAVES, FamilyHooks, FamilySpec


def chatml(image: str) -> str:
    """ChatML turns with ``image`` where a picture goes (Qwen-VL, InternVL); no default system turn."""
    return (
        "{%- for message in messages -%}"
        "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
        "{%- if message['content'] is string -%}{{- message['content'] -}}"
        "{%- else -%}{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'image' -%}{{- '" + image + "' -}}"
        "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{{- '<|im_end|>\\n' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


QWEN_VISION = "<|vision_start|><|image_pad|><|vision_end|>"
# Stock Qwen2-VL / Qwen2.5-VL template for one user turn (default system turn, vision placeholders, ChatML).
QWEN_CHATML = (
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}{%- endif -%}" + chatml(QWEN_VISION)
)


@cache
def images_only(base: type) -> type:
    """``base`` (a stock Qwen-VL processor class) without its video slot.

    The stock classes insist on a video processor, and that needs torchvision, which cannot be
    installed beside the CPU torch. vlmtune feeds pictures only, so everything it uses (image
    token expansion, mm_token_type_ids, chat template, save/load) stays the stock class's code.
    """

    class ImagesOnly(base):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            # ProcessorMixin pairs positional sub-processors with this signature's names, so the
            # video slot base passes on (None) is dropped instead of type-checked.
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

        def to_dict(self):  # saved as the stock class: AutoProcessor can load the run elsewhere
            return {**super().to_dict(), "processor_class": base.__name__}

    ImagesOnly.__name__ = ImagesOnly.__qualname__ = f"{base.__name__}ImagesOnly"
    return ImagesOnly


class QwenHooks(FamilyHooks):
    def __init__(self, processor_class: str):
        self.processor_class = processor_class

    def load_processor(self, path: str, offline: bool = False):
        import transformers

        return images_only(getattr(transformers, self.processor_class)).from_pretrained(path, local_files_only=offline)

    def limit_image_tokens(self, processor, model_config, max_image_tokens: int) -> dict:
        """max_pixels from the budget: one image token per merged patch of (patch_size x merge_size)^2 pixels.

        The processor resizes every picture to at most max_pixels (size["longest_edge"]), so the
        checkpoint default (12,845,056) gives a 4032x3024 photo 15,552 tokens.
        """
        images = processor.image_processor
        per_token = (images.patch_size * images.merge_size) ** 2
        low, high = images.size["shortest_edge"], images.size["longest_edge"]
        if max_image_tokens * per_token < low:
            raise VlmtuneError(f"model.max_image_tokens={max_image_tokens}: this Qwen-VL processor gives every picture at "
                               f"least {low // per_token} image tokens (min_pixels={low}); raise it")
        high = min(high, max_image_tokens * per_token)
        images.size = type(images.size)(shortest_edge=low, longest_edge=high)  # the processor's own SizeDict
        return {"max_pixels": high, "min_pixels": low, "image_tokens": high // per_token}


def _row(name: str, model_class: str, processor_class: str, vision_leaves: tuple[str, ...], **docs) -> FamilySpec:
    return FamilySpec(
        name=name,
        model_types=(name,),
        model_class=model_class,
        lm_prefix=r"model\.language_model",
        # The merger (projector) lives under model.visual too: scoping vision LoRA to the blocks keeps
        # it, and the patch-embedding Conv3d (leaf "proj"), out of the vision pattern.
        vision_prefix=r"model\.visual\.blocks",
        projector_modules=("model.visual.merger",),
        lm_leaves=LLAMA_LEAVES,
        vision_leaves=vision_leaves,
        end_of_turn="<|im_end|>",
        stop_tokens=("<|endoftext|>",),  # EOS of the base (non-instruct) checkpoints
        chat_template=QWEN_CHATML,
        hooks=QwenHooks(processor_class),
        seq_keys=("mm_token_type_ids",),
        notes="dynamic resolution; M-RoPE positions from mm_token_type_ids + image_grid_thw",
        **docs,  # presets, verified
    )


# Qwen2-VL vision blocks: fused qkv + proj, GELU MLP fc1/fc2; Qwen2.5-VL: SwiGLU gate/up/down.
QWEN2_VL = _row("qwen2_vl", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", ("qkv", "proj", "fc1", "fc2"),
               presets=("configs/qwen2-vl-2b-qlora.yaml",),
               verified=(("Qwen/Qwen2-VL-2B-Instruct", "shapes+tokenizer"), ("Qwen/Qwen2-VL-7B-Instruct", "shapes+tokenizer")))
QWEN2_5_VL = _row("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor",
                  ("qkv", "proj", "gate_proj", "up_proj", "down_proj"), presets=("configs/qwen2.5-vl-7b.yaml",),
                  verified=(("Qwen/Qwen2.5-VL-7B-Instruct", "shapes+tokenizer"),))
