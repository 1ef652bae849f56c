"""InternVL quirks (448 px tiles + thumbnail, <img>...</img> around the tile tokens, the images-only
processor) on the tiny model, and the real InternVL3-1B module tree.

Labels, padding, generation, LoRA and reload checks for this row: tests/unit/test_families.py.
"""

import json

import pytest
import torch
from PIL import Image

import families_tiny as ft
import families_tiny_e as fe
import family_cases as fcs
from vlmtune.models.families.internvl import INTERNVL
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.models.resolution import image_tokens_in
from vlmtune.training.collate import Collator

TILE_TOKENS = fe.INTERNVL_TILE_TOKENS


@pytest.mark.parametrize("size,tiles", [((56, 56), 1), ((30, 60), 3), ((60, 30), 3), ((40, 30), 1)])
def test_tiles_follow_the_aspect_and_each_gets_its_tokens(size, tiles):
    """A 1:2 or 2:1 picture takes a 1x2 / 2x1 grid + a thumbnail; one closer to square stays one tile."""
    _, processor = fe.internvl()
    ex = PromptAnswerTokenizer(processor, INTERNVL, 256).encode(Image.new("RGB", size), fcs.PROMPT, fcs.ANSWER)
    assert ex["pixel_values"].shape == (tiles, 3, fe.INTERNVL_TILE, fe.INTERNVL_TILE)
    assert ex["input_ids"].count(fcs.token_ids(processor, ["<IMG_CONTEXT>"])[0]) == tiles * TILE_TOKENS
    assert image_tokens_in(processor, ex["input_ids"]) == tiles * TILE_TOKENS + 2  # <img> and </img> count too


def test_tiles_of_a_batch_are_concatenated_in_picture_order():
    _, processor = fe.internvl()
    enc = PromptAnswerTokenizer(processor, INTERNVL, 256)
    one, three = (enc.encode(Image.new("RGB", s, c), fcs.PROMPT, fcs.ANSWER) for s, c in [((56, 56), (9, 9, 9)), ((30, 60), (200, 0, 0))])
    batch = Collator(processor.tokenizer.pad_token_id)([one, three])
    assert batch["pixel_values"].shape[0] == 4 and torch.equal(batch["pixel_values"][1:], three["pixel_values"])


def test_processor_saves_its_tile_settings_without_a_video_processor(tmp_path):
    ft.save(*fe.internvl(), tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["image_seq_length"] == TILE_TOKENS and "video_processor" not in saved
    assert (saved["image_processor"]["max_patches"], saved["image_processor"]["size"]) == \
        (4, {"height": fe.INTERNVL_TILE, "width": fe.INTERNVL_TILE})
    reloaded = INTERNVL.hooks.load_processor(str(tmp_path))
    assert (reloaded.image_token, reloaded.start_image_token) == ("<IMG_CONTEXT>", "<img>")


# ---------------------------------------------------------------- the real module tree (meta device)
def test_real_1b_projector_maps_pixel_shuffled_features_to_the_lm():
    """Size and LoRA counts: tests/unit/test_families.py. Pixel shuffle 0.5 stacks 4 features: 4 x 1024 in."""
    _, model = fcs.meta_model("OpenGVLab__InternVL3-1B-hf")
    projector = model.get_submodule("model.multi_modal_projector")
    assert (projector.linear_1.in_features, projector.linear_2.out_features) == (4 * 1024, 896)
    assert fcs.linears_under(model, "model.multi_modal_projector.") == {"model.multi_modal_projector.linear_1",
                                                                        "model.multi_modal_projector.linear_2"}
