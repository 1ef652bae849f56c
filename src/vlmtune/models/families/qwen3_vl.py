"""Qwen3-VL (2B/4B/8B/32B dense, Instruct and Thinking): Qwen2-VL-style dynamic resolution with DeepStack.

Module tree (counted on the real 4B and 8B configs in tests/unit/test_family_qwen3_vl.py):
- LM ``model.language_model``: Qwen3 layers, q/k/v/o_proj + gate/up/down_proj (q_norm/k_norm are norms).
- vision ``model.visual.blocks``: fused ``attn.qkv`` + ``attn.proj``, MLP ``linear_fc1``/``linear_fc2``.
- projector: ``model.visual.merger`` and ``model.visual.deepstack_merger_list`` (one merger per
  DeepStack layer, whose outputs are added to the LM's first hidden states). Both map vision
  features into the LM, so both train whole with the "projector" target; both live under
  model.visual, so the vision LoRA pattern is scoped to model.visual.blocks.

Checked against transformers' qwen3_vl code:
- The processor (Qwen2-VL image processor, patch 16, merge 2: one token per 32x32 px) emits
  mm_token_type_ids beside input_ids; M-RoPE positions come from them, so they travel as a
  sequence key, as in the Qwen2-VL rows. Its video half needs torchvision: ``images_only``.
- logits_to_keep: the forward slices hidden states with ``slice_logits_to_keep`` (boolean masks too).
- feature_cache stays off: ``mm_encoder_outputs["image"]`` must carry ``deepstack_features`` beside
  the pooled output, and get_image_features needs image_grid_thw: the cache (training/features.py)
  feeds neither.
"""

from __future__ import annotations

from vlmtune.models.families.qwen import QWEN_VISION, QwenHooks, chatml
from vlmtune.models.family import LLAMA_LEAVES, FamilySpec

# The Qwen3-VL instruct template for pictures: ChatML without Qwen2-VL's default system turn.
QWEN3_VL_TEMPLATE = chatml(QWEN_VISION)

QWEN3_VL = FamilySpec(
    name="qwen3_vl",
    model_types=("qwen3_vl",),
    model_class="Qwen3VLForConditionalGeneration",
    lm_prefix=r"model\.language_model",
    vision_prefix=r"model\.visual\.blocks",  # not the mergers (projector) nor the patch embedding
    projector_modules=("model.visual.merger", "model.visual.deepstack_merger_list"),
    lm_leaves=LLAMA_LEAVES,
    vision_leaves=("qkv", "proj", "linear_fc1", "linear_fc2"),
    end_of_turn="<|im_end|>",
    stop_tokens=("<|endoftext|>",),
    chat_template=QWEN3_VL_TEMPLATE,
    hooks=QwenHooks("Qwen3VLProcessor"),  # max_pixels from the budget, one token per (16 x 2)^2 px
    seq_keys=("mm_token_type_ids",),
    notes="Qwen3-VL 2B/4B/8B/32B dense: dynamic resolution (32 px per token), DeepStack mergers train with the projector",
    presets=("configs/qwen3-vl-4b.yaml",),
    verified=(("Qwen/Qwen3-VL-4B-Instruct", "shapes"), ("Qwen/Qwen3-VL-8B-Instruct", "shapes")),
)
