"""IDEFICS (v1), Idefics2, Idefics3 and SmolVLM quirks on tiny random models with their real processor classes.

Labels, padding, generation, LoRA and reload checks for these rows: tests/unit/test_families.py.
"""

import torch

import families_tiny as ft
import families_tiny_b as tiny
import family_cases as fcs
from vlmtune.config import load_config
from vlmtune.models.lora import apply_plan
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.models.registry import REGISTRY
from vlmtune.training.collate import Collator


def test_idefics_image_attention_mask_covers_the_answer():
    case, (_, processor) = fcs.case("idefics"), tiny.idefics()
    ex = PromptAnswerTokenizer(processor, case.spec, 128).encode(case.picture(), fcs.PROMPT, fcs.ANSWER)
    # <s> and the opening <fake> come before the picture; from <image> on, every token (answer too) sees it.
    assert ex["image_attention_mask"][0, :, 0].tolist() == [0, 0] + [1] * (len(ex["input_ids"]) - 2)


def test_sub_image_counts_differ_and_padding_pictures_are_zero():
    spec, (_, processor) = REGISTRY["idefics3"], tiny.idefics3()
    a, b = ft.examples(processor, spec)[::2]  # 56x56 and 30x60 px
    assert a["pixel_values"].shape[1] == 5 and b["pixel_values"].shape[1] == 3  # 2x2 + whole, 2x1 + whole
    pixels = Collator(processor.tokenizer.pad_token_id)([a, b])["pixel_values"]
    assert pixels.shape[:2] == (2, 5) and pixels[1, 3:].abs().sum() == 0


def test_idefics_lm_lora_reaches_the_gated_cross_attention_layers():
    spec, (model, _) = REGISTRY["idefics"], tiny.idefics()
    peft_model = apply_plan(model, spec, load_config(overrides=["train.lora.targets=lm"]).train.lora)
    trainable = {n.split(".lora_")[0] for n, p in peft_model.named_parameters() if p.requires_grad}
    # 2 LM layers + 2 gated cross-attention layers, 7 linears each; nothing in vision or the perceiver
    assert len(trainable) == 4 * 7
    assert {n.split(".")[3] for n in trainable} == {"layers", "gated_cross_attn_layers"}


def test_smolvlm2_checkpoints_are_served_by_the_smolvlm_row():
    """SmolVLM2 (256M/500M Video, 2.2B) ships model_type "smolvlm": the smolvlm row, with exact LoRA counts
    on the 2.2B shapes (SmolLM2-1.7B + SigLIP 384 px, scale factor 3)."""
    import transformers
    from transformers import AutoConfig

    from vlmtune.models.lora import plan_for
    from vlmtune.models.registry import family_for, matching_modules

    config = AutoConfig.from_pretrained(ft.DATA / "HuggingFaceTB__SmolVLM2-2.2B-Instruct")
    spec = family_for(config.model_type)
    assert spec is REGISTRY["smolvlm"] and spec.model_class == "SmolVLMForConditionalGeneration"
    with torch.device("meta"):
        model = getattr(transformers, spec.model_class)(config)
    assert sum(p.numel() for p in model.parameters()) == 2_246_784_880  # "2.25B"
    plan = plan_for(spec, load_config(overrides=["train.lora.targets=lm+vision+projector"]).train.lora)
    matched = matching_modules(model, plan.lora_pattern)
    assert sum(n.startswith("model.text_model.") for n in matched) == 24 * 7
    assert sum(n.startswith("model.vision_model.") for n in matched) == 27 * 6 and len(matched) == 24 * 7 + 27 * 6
    assert plan.whole == ("model.connector",)
