"""LLaVA-OneVision quirks (anyres tiles, image_newline, the row's own template and processor) on the tiny
model, and the real 7B module tree.

Labels, padding, generation, LoRA and reload checks for this row: tests/unit/test_families.py.
"""

import json

import torch
from PIL import Image

import families_tiny as ft
import families_tiny_e as fe
import family_cases as fcs
from vlmtune.config import ModelConfig, load_config
from vlmtune.models.families.llava_onevision import LLAVA_ONEVISION, ONEVISION_TEMPLATE
from vlmtune.models.loading import load_model
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.training.collate import Collator

IMAGE = "<image>"


def test_mixed_tile_counts_are_zero_padded_and_image_newline_rows_counted():
    model, processor = fe.llava_onevision()
    enc = PromptAnswerTokenizer(processor, LLAVA_ONEVISION, 128)
    square = enc.encode(Image.new("RGB", (56, 56)), fcs.PROMPT, fcs.ANSWER)
    wide = enc.encode(Image.new("RGB", (56, 28), (20, 90, 200)), "What is this?", "a rook")
    image = fcs.token_ids(processor, [IMAGE])[0]
    # 1x2 grid: base 4 + 2 x 4 features + 2 newlines = 14 tokens, 3 views; 2x2: 4 + 16 + 4 = 24, 5 views
    assert (wide["input_ids"].count(image), square["input_ids"].count(image)) == (14, 24)
    batch = Collator(processor.tokenizer.pad_token_id)([square, wide])
    assert batch["pixel_values"].shape == (2, 5, 3, ft.TILE, ft.TILE) and batch["pixel_values"][1, 3:].abs().sum() == 0
    assert batch["image_sizes"].tolist() == [[56, 56], [28, 56]]


def test_image_newline_trains_with_the_projector_only():
    from vlmtune.models.lora import apply_plan

    for targets, trains in (("lm+projector", True), ("lm", False)):
        model, _ = fe.llava_onevision()
        params = dict(apply_plan(model, LLAVA_ONEVISION, load_config(overrides=[f"train.lora.targets={targets}"]).train.lora)
                      .named_parameters())
        assert params["base_model.model.model.image_newline"].requires_grad is trains


def test_checkpoint_without_a_template_gets_the_onevision_one_and_keeps_its_processor_settings(tmp_path):
    model, processor = fe.llava_onevision()
    processor.chat_template = None
    ft.save(model, processor, tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert (saved["num_image_tokens"], saved["vision_feature_select_strategy"], saved["vision_aspect_ratio"]) == \
        (4, "full", "anyres_max_9")
    _, loaded, spec, _ = load_model(ModelConfig(name=str(tmp_path)), training=True, device=torch.device("cpu"))
    assert spec is LLAVA_ONEVISION and loaded.chat_template == ONEVISION_TEMPLATE  # not LLaVA-NeXT's ChatML pick
    assert PromptAnswerTokenizer(loaded, spec).prompt_text(fcs.PROMPT) == \
        "<|im_start|>user <image>\nDescribe this picture.<|im_end|><|im_start|>assistant\n"


# ---------------------------------------------------------------- the real module tree (meta device)
def test_real_7b_tiles_on_36_grids_with_one_newline_row_vector():
    """Size and LoRA counts: tests/unit/test_families.py."""
    config, model = fcs.meta_model("llava-hf__llava-onevision-qwen2-7b-ov-hf")
    assert len(config.image_grid_pinpoints) == 36 and max(map(max, config.image_grid_pinpoints)) == 2304
    assert model.get_parameter("model.image_newline").shape == (3584,)
