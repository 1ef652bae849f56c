"""Mllama (Llama-3.2-Vision): a tiled ViT whose features reach the LM through cross-attention layers.

Module tree (counted on the real 11B config in tests/unit/test_real_shapes_b.py):
- LM ``model.language_model``: self-attention layers and, at ``cross_attention_layers`` (every 5th
  in 11B/90B), cross-attention layers (cross_attn q/k/v/o_proj + MLP, tanh gates
  cross_attn_attn_gate / cross_attn_mlp_gate as bare parameters).
- vision ``model.vision_model``: local ``transformer`` + gated ``global_transformer``, both
  q/k/v/o_proj + fc1/fc2.
- projector ``model.multi_modal_projector``: one Linear from the concatenated layer features to the LM.

Decisions:
- LoRA "lm" covers the cross-attention layers too. They are LM layers (same list, same leaf
  names, between the self-attention ones) and the place where text learns to read the picture.
- "projector" is multi_modal_projector alone. The cross-attention gates stay as pre-trained: as a
  module PEFT would have to save the whole layer around them (a full LM layer, ~200M parameters in
  11B), and a row's fixed list of parameter paths cannot follow config.cross_attention_layers.
- cross_attention_mask [1, seq, n_images, n_tiles] is extended over the answer (answer tokens keep
  attending to the picture, as in generation) and zero-padded by the collator.
"""

from __future__ import annotations


from vlmtune.models.families.cross_attention import CrossAttentionHooks
from vlmtune.models.families.processors import picture_per_prompt
from vlmtune.models.family import FamilySpec

# Llama-3 chat as the Llama-3.2-Vision-Instruct template writes it for one user turn with a picture.
LLAMA3_VISION_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<|image|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] | trim }}{% endif %}{% endfor %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def mllama_processor_class() -> type:
    from transformers import MllamaProcessor

    return picture_per_prompt(MllamaProcessor)


class MllamaHooks(CrossAttentionHooks):
    def load_processor(self, path: str, offline: bool = False):
        # The stock class, one picture per prompt (families/processors.py).
        return mllama_processor_class().from_pretrained(path, local_files_only=offline)


MLLAMA = FamilySpec(
    name="mllama",
    model_types=("mllama",),
    model_class="MllamaForConditionalGeneration",
    lm_prefix=r"model\.language_model",
    vision_prefix=r"model\.vision_model",
    projector_modules=("model.multi_modal_projector",),
    vision_leaves=("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"),
    end_of_turn="<|eot_id|>",
    stop_tokens=("<|end_of_text|>",),  # the base model's EOS; the instruct tokenizer's EOS is <|eot_id|>
    chat_template=LLAMA3_VISION_TEMPLATE,
    hooks=MllamaHooks(),
    seq_keys=("cross_attention_mask",),
    # The template writes <|begin_of_text|> and the Llama-3 tokenizer would add another (the model
    # card calls the processor with add_special_tokens=False too).
    processor_kwargs=(("add_special_tokens", False),),
    notes="Llama-3.2-11B/90B-Vision (+Instruct)",
    presets=("configs/llama-3.2-11b-vision.yaml",),
    verified=(("meta-llama/Llama-3.2-11B-Vision-Instruct", "shapes+tokenizer"),),
)
