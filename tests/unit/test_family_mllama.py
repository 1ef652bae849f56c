"""Mllama (Llama-3.2-Vision) quirks on a tiny random model with the real processor class: one BOS,
cross-attention masks over the answer, LoRA in the cross-attention layers.

Labels, padding, generation, LoRA and reload checks for this row: tests/unit/test_families.py.
"""

from dataclasses import replace

import pytest
from PIL import Image

import families_tiny as ft
import families_tiny_b as tiny
import family_cases as fcs
from family_cases import ANSWER, PROMPT
from vlmtune.config import load_config
from vlmtune.models.lora import apply_plan
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.models.registry import MLLAMA
from vlmtune.training.collate import Collator

IMAGE_AT = fcs.MLLAMA.index("<|image|>")


@pytest.fixture(scope="module")
def processor():
    return tiny.mllama()[1]


def picture(size=(40, 30)):
    return Image.new("RGB", size, (200, 30, 30))


def test_template_bos_is_not_doubled_by_the_tokenizer(processor):
    # The tokenizer adds BOS like Llama-3's and the template writes one: without the row's
    # add_special_tokens=False the prompt would start with two.
    once = PromptAnswerTokenizer(processor, MLLAMA, 64).encode(picture(), PROMPT, ANSWER)
    doubled = PromptAnswerTokenizer(processor, replace(MLLAMA, processor_kwargs=()), 64).encode(picture(), PROMPT, "a")
    bos = fcs.token_ids(processor, ["<|begin_of_text|>"])
    assert once["input_ids"][:2] != bos * 2 and doubled["input_ids"][:2] == bos * 2


def test_cross_attention_mask_covers_the_answer(processor):
    wide = PromptAnswerTokenizer(processor, MLLAMA, 64).encode(picture((40, 30)), PROMPT, ANSWER)
    square = PromptAnswerTokenizer(processor, MLLAMA, 64).encode(picture((28, 28)), PROMPT, ANSWER)
    n = len(wide["input_ids"])
    assert wide["cross_attention_mask"].shape == (1, n, 1, tiny.MLLAMA_TILES)
    # From <|image|> on, every token (the answer too) attends to the picture's tiles: 2 for a wide one, 1 for a square one.
    assert wide["cross_attention_mask"][0, :, 0].tolist() == [[0, 0]] * IMAGE_AT + [[1, 1]] * (n - IMAGE_AT)
    assert square["cross_attention_mask"][0, :, 0].tolist() == [[0, 0]] * IMAGE_AT + [[1, 0]] * (n - IMAGE_AT)


def test_collated_cross_attention_masks_are_zero_over_padding(processor):
    a, b = ft.examples(processor, MLLAMA)[::2]
    batch = Collator(processor.tokenizer.pad_token_id, MLLAMA.seq_keys)([a, b])
    n, longest = len(a["input_ids"]), batch["input_ids"].shape[1]
    assert n < longest and batch["cross_attention_mask"].shape[:2] == (2, longest)
    assert batch["cross_attention_mask"][0, n:].abs().sum() == 0  # padding attends to no picture


def test_lm_lora_covers_self_and_cross_attention_layers_only():
    model, _ = tiny.mllama()
    peft_model = apply_plan(model, MLLAMA, load_config(overrides=["train.lora.targets=lm+vision"]).train.lora)
    adapted = {n.split(".lora_")[0].removeprefix("base_model.model.") for n, p in peft_model.named_parameters()
               if p.requires_grad}
    lm = [n for n in adapted if n.startswith("model.language_model.")]
    vision = [n for n in adapted if n.startswith("model.vision_model.")]
    # 2 self-attention + 1 cross-attention layers x 7 linears; 2 local + 1 global vision layers x 6
    assert len(lm) == 3 * 7 and sum(".cross_attn." in n for n in lm) == 4
    assert len(vision) == 3 * 6 and len(adapted) == len(lm) + len(vision)
