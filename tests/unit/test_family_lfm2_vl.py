"""LFM2-VL: the real LFM2.5-VL-1.6B module tree on the meta device, and the torchvision-free image processor.

The tiny-model checks (labels, padding, generation, LoRA steps, reload, train) are the shared ones:
tests/unit/test_families.py -k lfm2_vl.
"""

import json

import numpy as np
import pytest
from PIL import Image

import families_tiny as ft
import families_tiny_d as fd
import family_cases as fcs
from vlmtune.config import load_config
from vlmtune.models.families.lfm2_vl import LFM2_VL
from vlmtune.models.families.lfm2_vl_images import lfm2_vl_image_processor_class
from vlmtune.models.lora import plan_for
from vlmtune.models.registry import family_for, matching_modules

REAL = ft.DATA / "LiquidAI__LFM2.5-VL-1.6B"


@pytest.fixture(scope="module")
def real_16b():
    return fcs.meta_model(REAL.name)


def test_real_model_builds_to_its_published_size(real_16b):
    config, model = real_16b
    assert family_for(config.model_type) is LFM2_VL
    assert sum(p.numel() for p in model.parameters()) == 1_596_625_904  # as Hugging Face reports; LM head tied
    assert config.text_config.layer_types.count("conv") == 10
    assert model.model.language_model.layers[0].feed_forward.w1.out_features == 8192  # 12288 auto-adjusted: 2/3, to 256


def test_real_model_lora_targets_are_exactly_each_parts_linears(real_16b):
    _, model = real_16b
    lm, vision = set(matching_modules(model, LFM2_VL.lm_pattern())), set(matching_modules(model, LFM2_VL.vision_pattern()))
    # 10 conv blocks (in_proj, out_proj) + 6 attention blocks (q/k/v/out_proj) + 16 SwiGLU (w1-3).
    assert len(lm) == 10 * 2 + 6 * 4 + 16 * 3 == 92 and lm == fcs.linears_under(model, "model.language_model.")
    patch = "model.vision_tower.embeddings.patch_embedding"  # a Linear over flattened patches: stays frozen
    assert len(vision) == 27 * 6 == 162 and vision == fcs.linears_under(model, "model.vision_tower.") - {patch}
    plan = plan_for(LFM2_VL, load_config(overrides=["train.lora.targets=lm+vision+projector"]).train.lora)
    matched = set(matching_modules(model, plan.lora_pattern))
    assert matched == lm | vision and "lm_head" not in matched and patch not in matched
    assert plan.whole == ("model.multi_modal_projector",)
    assert fcs.linears_under(model, "model.multi_modal_projector") == {"model.multi_modal_projector.linear_1",
                                                                     "model.multi_modal_projector.linear_2"}


def real_images():
    return lfm2_vl_image_processor_class().from_dict(json.loads((REAL / "preprocessor_config.json").read_text()))


def test_pil_port_resizes_tiles_and_pads_as_the_stock_algorithm():
    """Hand-computed from transformers' Lfm2VlImageProcessor rules at the checkpoint settings."""
    images = real_images()
    small = images(Image.new("RGB", (640, 480)), return_row_col_info=True, return_tensors="pt")
    # 640x480 is under 524,288 px: one view, smart-resized to 576x416 (32 px steps, <= 256 tokens) = 36x26 patches.
    assert small["spatial_shapes"].tolist() == [[26, 36]] and small["image_sizes"].tolist() == [[416, 576]]
    assert small["pixel_values"].shape == (1, 1024, 768) and int(small["pixel_attention_mask"].sum()) == 936
    large = images(Image.new("RGB", (1920, 1080)), return_row_col_info=True, return_tensors="pt")
    # 1920x1080: 4x2 tiles of 512 px (ratio tie 2:1 / 4:2 goes to the larger grid) + a 672x384 thumbnail.
    assert (large["image_rows"].tolist(), large["image_cols"].tolist()) == ([2], [4])
    assert large["spatial_shapes"].tolist() == [[32, 32]] * 8 + [[24, 42]]


def test_patches_are_the_pixels_in_row_column_channel_order():
    images = lfm2_vl_image_processor_class()(encoder_patch_size=8, tile_size=32, min_image_tokens=1, max_image_tokens=4,
                                     do_normalize=False, do_resize=False)
    rgb = np.random.RandomState(0).randint(0, 256, (32, 32, 3), dtype=np.uint8)  # 32x32: no resize needed
    out = images(Image.fromarray(rgb), return_tensors="np")
    first = rgb[:8, :8].reshape(-1) / 255  # patch (0, 0): rows of 8 pixels, RGB interleaved
    second = rgb[:8, 8:16].reshape(-1) / 255
    np.testing.assert_allclose(out["pixel_values"][0, 0], first, atol=1e-6)
    np.testing.assert_allclose(out["pixel_values"][0, 1], second, atol=1e-6)


def test_processor_saves_as_the_stock_classes_and_reloads_without_torchvision(tmp_path):
    ft.save(*fd.lfm2_vl(), tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == "Lfm2VlProcessor"
    assert saved["image_processor"]["image_processor_type"] == "Lfm2VlImageProcessor"
    reloaded = LFM2_VL.hooks.load_processor(str(tmp_path))
    assert type(reloaded.image_processor) is lfm2_vl_image_processor_class() and reloaded.image_processor.tile_size == 32
    assert reloaded.chat_template == fd.lfm2_vl()[1].chat_template
