"""PaliGemma: a prefix-LM with no chat template.

The processor itself lays out ``<image>`` x N + bos + prompt + "\\n" and, given ``suffix=``, appends
answer + eos as a second segment, with labels and token_type_ids (0 = prefix, attended
bidirectionally; 1 = suffix, causal). We keep the processor's layout and labels, and only apply
vlmtune's max_length rule; token_type_ids travel as a sequence key.
"""

from __future__ import annotations

from vlmtune.models.families.llava import CLIP_LIKE_VISION
from vlmtune.models.family import FamilyHooks, FamilySpec


class PaliGemmaHooks(FamilyHooks):
    def prompt_text(self, tok, prompt: str) -> str:
        """One image placeholder before the prompt: the processor expands it and adds bos and "\\n"."""
        return tok.processor.image_token + prompt

    def encode(self, tok, image, prompt: str, answer: str, where: str) -> dict:
        enc = tok.processor(images=[image], text=[tok.prompt_text(prompt)], suffix=[answer], return_tensors="pt")
        ids, types = enc["input_ids"][0].tolist(), enc["token_type_ids"]
        prompt_len = int((types[0] == 0).sum())
        answer_len = len(ids) - prompt_len
        keep = prompt_len + min(answer_len, tok.room_for_answer(prompt_len, answer_len, where))
        return {
            "input_ids": ids[:keep],
            "labels": enc["labels"][0, :keep].tolist(),
            "truncated": keep < len(ids),
            "token_type_ids": types[:, :keep],
            "pixel_values": enc["pixel_values"],
        }

    @property
    def multi_turn(self) -> bool:
        return False


PALIGEMMA = FamilySpec(
    name="paligemma",
    model_types=("paligemma",),
    model_class="PaliGemmaForConditionalGeneration",
    lm_prefix=r"model\.language_model",
    vision_prefix=r"model\.vision_tower",  # SigLIP: q/k/v/out_proj + fc1/fc2, like CLIP
    projector_modules=("model.multi_modal_projector",),
    vision_leaves=CLIP_LIKE_VISION,
    hooks=PaliGemmaHooks(),
    seq_keys=("token_type_ids",),
    notes="PaliGemma / PaliGemma 2 (prefix-LM, task prompts such as 'caption en')",
    presets=("configs/paligemma-3b-224.yaml",),
    verified=(("google/paligemma-3b-pt-224", "shapes+tokenizer"),),
)
