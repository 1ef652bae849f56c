"""Mistral 3: the real 24B module tree on the meta device, and the Pixtral processor the row loads without torchvision.

The tiny-model checks (labels, padding, generation, LoRA steps, reload, train) are the shared ones:
tests/unit/test_families.py -k mistral3.
"""

import json

import pytest

import families_tiny as ft
import families_tiny_d as fd
import family_cases as fcs
from vlmtune.config import load_config
from vlmtune.models.families.mistral3 import MISTRAL3
from vlmtune.models.lora import plan_for
from vlmtune.models.registry import family_for, matching_modules

REAL = ft.DATA / "mistralai__Mistral-Small-3.1-24B-Instruct-2503"


@pytest.fixture(scope="module")
def real_24b():
    return fcs.meta_model(REAL.name)


def test_real_24b_builds_to_its_published_size(real_24b):
    config, model = real_24b
    assert family_for(config.model_type) is MISTRAL3
    # 24,011,361,280 as Hugging Face reports for the checkpoint; the LM head is its own matrix.
    assert sum(p.numel() for p in model.parameters()) == 24_011_361_280
    assert model.lm_head.weight is not model.model.language_model.embed_tokens.weight


def test_real_24b_lora_targets_are_exactly_each_parts_linears(real_24b):
    _, model = real_24b
    lm, vision = set(matching_modules(model, MISTRAL3.lm_pattern())), set(matching_modules(model, MISTRAL3.vision_pattern()))
    assert len(lm) == 40 * 7 == 280 and lm == fcs.linears_under(model, "model.language_model.")
    assert len(vision) == 24 * 7 == 168 and vision == fcs.linears_under(model, "model.vision_tower.")  # patch_conv: Conv2d
    plan = plan_for(MISTRAL3, load_config(overrides=["train.lora.targets=lm+vision+projector"]).train.lora)
    matched = set(matching_modules(model, plan.lora_pattern))
    assert matched == lm | vision and "lm_head" not in matched
    assert plan.whole == ("model.multi_modal_projector",)
    assert fcs.linears_under(model, "model.multi_modal_projector") == {  # trained whole, never a LoRA target
        "model.multi_modal_projector.patch_merger.merging_layer", "model.multi_modal_projector.linear_1",
        "model.multi_modal_projector.linear_2"}


def test_processor_saves_as_the_stock_class_with_its_merge_settings(tmp_path):
    ft.save(*fd.mistral3(), tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert (saved["processor_class"], saved["patch_size"], saved["spatial_merge_size"]) == ("PixtralProcessor", 14, 2)
    reloaded = MISTRAL3.hooks.load_processor(str(tmp_path))
    assert type(reloaded.image_processor).__name__ == "PixtralImageProcessorPil"
    assert reloaded.image_token_ids == reloaded.tokenizer.convert_tokens_to_ids(["[IMG]", "[IMG_BREAK]", "[IMG_END]"])


def test_a_tall_picture_gets_a_break_after_each_row(tmp_path):
    """30x60 px, longest edge 56: scaled to 28x56, so 1 column x 2 rows of 28 px: [IMG] [IMG_BREAK] [IMG] [IMG_END]."""
    from PIL import Image

    from vlmtune.models.prompting import PromptAnswerTokenizer

    _, processor = fd.mistral3()
    batch = PromptAnswerTokenizer(processor, MISTRAL3).encode_prompts([Image.new("RGB", (30, 60))], ["What?"])
    tokens = processor.tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    assert tokens[1:7] == ["[INST]", "[IMG]", "[IMG_BREAK]", "[IMG]", "[IMG_END]", "what"]
    assert batch["image_sizes"].tolist() == [[56, 28]]
