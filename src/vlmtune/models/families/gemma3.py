"""Gemma 3 (4B/12B/27B, pt and it): SigLIP-so400m at 896 px, 256 pooled image tokens, Gemma 3 LM.

Module tree (counted on the real 4B config in tests/unit/test_family_gemma3.py):
- LM ``model.language_model``: q/k/v/o_proj + gate/up/down_proj per layer (5 sliding-window
  layers per global one).
- vision ``model.vision_tower`` (SigLIP, no pooling head): q/k/v/out_proj + fc1/fc2 per layer.
- projector ``model.multi_modal_projector``: average pooling, an RMSNorm and a bare
  ``mm_input_projection_weight`` parameter, no nn.Linear. PEFT trains it whole as a module
  (modules_to_save copies the module, its bare parameter included).

Data, checked against transformers' gemma3 code:
- The processor expands the template's ``<start_of_image>`` into "\\n\\n<start_of_image>" +
  ``<image_soft_token>`` x mm_tokens_per_image + "<end_of_image>\\n\\n", and returns
  token_type_ids (1 on image soft tokens). The model uses them for bidirectional attention within
  each picture; without them image tokens attend causally, so they travel as a sequence key (the
  answer is text: type 0).
- The template writes ``<bos>`` and the Gemma tokenizer adds one (add_bos_token): the processor
  is called with add_special_tokens=False.
- feature_cache stays off: Gemma3Model reads ``mm_encoder_outputs["image"].pooler_output`` as one
  tensor, while the cache (training/features.py) hands a per-picture list, as LLaVA reads it.
"""

from __future__ import annotations


from vlmtune.models.families.llava import CLIP_LIKE_VISION
from vlmtune.models.families.processors import picture_per_prompt
from vlmtune.models.family import FamilyHooks, FamilySpec

# The Gemma 3 instruct template (as the checkpoints ship it), for checkpoints whose processor has none.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}"
    "{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- elif message['content'] is iterable -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- else -%}{{ raise_exception('Invalid content type') }}{%- endif -%}"
    "{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


def gemma3_processor_class() -> type:
    """The stock Gemma3Processor, one picture per prompt (its own layout gives a flat list to the first prompt)."""
    from transformers import Gemma3Processor

    return picture_per_prompt(Gemma3Processor)


class Gemma3Hooks(FamilyHooks):
    def load_processor(self, path: str, offline: bool = False):
        # AutoProcessor's image processor is already the PIL one without torchvision; the class
        # is ours only for batched prompts (families/processors.py).
        return gemma3_processor_class().from_pretrained(path, local_files_only=offline)


GEMMA3 = FamilySpec(
    name="gemma3",
    model_types=("gemma3",),
    model_class="Gemma3ForConditionalGeneration",
    lm_prefix=r"model\.language_model",
    vision_prefix=r"model\.vision_tower",  # SigLIP: q/k/v/out_proj + fc1/fc2
    projector_modules=("model.multi_modal_projector",),
    vision_leaves=CLIP_LIKE_VISION,
    end_of_turn="<end_of_turn>",
    stop_tokens=("<eos>",),  # where a repackaged tokenizer made <end_of_turn> its EOS
    chat_template=GEMMA3_TEMPLATE,
    processor_kwargs=(("add_special_tokens", False),),
    hooks=Gemma3Hooks(),
    seq_keys=("token_type_ids",),
    notes="Gemma 3 4B/12B/27B (pt, it): SigLIP 896 px, 256 image tokens; pan-and-scan off (processor default)",
    presets=("configs/gemma-3-4b-it.yaml",),
    verified=(("google/gemma-3-4b-it", "shapes"),),
)
