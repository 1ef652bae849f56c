"""Gemma 3: tiny random model with the stock processor (one picture per prompt), and the real 4B module tree."""

import json

import pytest
import torch
import transformers
from PIL import Image
from transformers import AutoProcessor

import families_tiny as ft
import families_tiny_c as fc
import family_cases as fcs
from family_cases import token_ids
from vlmtune.models.families.gemma3 import GEMMA3
from vlmtune.models.prompting import IGNORE, PromptAnswerTokenizer
from vlmtune.training.collate import Collator

IMG = "<image_soft_token>"
PROMPT, ANSWER = list(fcs.GEMMA3), ["a", "white", "rook", "<end_of_turn>"]  # the shared entry's layout


def picture(colour=(30, 60, 200)):
    return Image.new("RGB", (40, 30), colour)


@pytest.fixture(scope="module")
def built():
    return fc.gemma3()


def test_token_type_ids_hand_computed(built):
    _, processor = built
    ex = PromptAnswerTokenizer(processor, GEMMA3, 64).encode(picture(), "Describe this picture.", "a white rook")
    assert ex["token_type_ids"].tolist() == [[int(t == IMG) for t in PROMPT + ANSWER]]  # the answer is text
    assert ex["pixel_values"].shape == (1, 3, fc.GEMMA3_IMAGE, fc.GEMMA3_IMAGE) and ex["truncated"] is False


def test_pan_and_scan_is_off_even_for_a_picture_it_would_crop(built):
    _, processor = built
    wide = Image.new("RGB", (1024, 256), (10, 200, 30))  # aspect 4 and 256 px crops: pan-and-scan would cut 4
    ex = PromptAnswerTokenizer(processor, GEMMA3, 64).encode(wide, "What?", "a rook")
    assert ex["pixel_values"].shape[0] == 1 and int(ex["token_type_ids"].sum()) == fc.GEMMA3_IMAGE_TOKENS
    text = PromptAnswerTokenizer(processor, GEMMA3).prompt_text("What?")
    cropped = processor(images=[wide], text=[text], do_pan_and_scan=True, return_tensors="pt")
    assert cropped["pixel_values"].shape[0] == 1 + 4


def test_collator_pads_token_types_and_labels(built):
    _, processor = built
    enc = PromptAnswerTokenizer(processor, GEMMA3, 64)
    short, long = (enc.encode(picture(), "Describe this picture.", a) for a in ("a rook", "a white queen and a black pawn"))
    batch = Collator(processor.tokenizer.pad_token_id, GEMMA3.seq_keys)([short, long])
    extra = len(long["input_ids"]) - len(short["input_ids"])
    assert batch["token_type_ids"][0].tolist() == short["token_type_ids"][0].tolist() + [0] * extra
    assert batch["labels"][0].tolist() == short["labels"] + [IGNORE] * extra
    assert batch["pixel_values"].shape == (2, 3, fc.GEMMA3_IMAGE, fc.GEMMA3_IMAGE)


def test_batched_prompts_need_the_rows_processor_class(built):
    """The stock class gives a flat picture list to the first prompt; the row's gives one per prompt."""
    _, processor = built
    stock = transformers.Gemma3Processor(processor.image_processor, processor.tokenizer,
                                         chat_template=processor.chat_template, image_seq_length=fc.GEMMA3_IMAGE_TOKENS)
    with pytest.raises(ValueError, match="number of images"):
        PromptAnswerTokenizer(stock, GEMMA3).encode_prompts([picture(), picture()], ["Describe this picture.", "What?"])
    batch = PromptAnswerTokenizer(processor, GEMMA3).encode_prompts([picture(), picture()], ["Describe this picture.", "What?"])
    assert batch["input_ids"][0].tolist() == token_ids(processor, PROMPT)  # the training prompt, unpadded
    assert batch["attention_mask"][1].tolist()[:2] == [0, 0] and batch["token_type_ids"][1].tolist()[:2] == [0, 0]
    assert batch["token_type_ids"].sum() == 2 * fc.GEMMA3_IMAGE_TOKENS


def test_token_type_ids_make_image_tokens_attend_both_ways(built):
    """Without them Gemma3 falls back to a causal mask: only the picture's positions change."""
    model, processor = built
    ex = PromptAnswerTokenizer(processor, GEMMA3, 64).encode(picture(), "Describe this picture.", "a white rook")
    batch = Collator(processor.tokenizer.pad_token_id, GEMMA3.seq_keys)([ex])
    batch.pop("labels")
    first_image = PROMPT.index(IMG)
    with torch.no_grad():
        both_ways = model(**batch).logits[0]
        causal = model(**{k: v for k, v in batch.items() if k != "token_type_ids"}).logits[0]
    torch.testing.assert_close(both_ways[:first_image], causal[:first_image], rtol=0, atol=1e-6)
    # With token types the first picture token also sees the three after it.
    assert (both_ways[first_image] - causal[first_image]).abs().max() > 1e-3


def test_processor_saves_its_image_seq_length_and_loads_without_torchvision(tmp_path, built):
    ft.save(*built, tmp_path)  # processor class, spec and prompt ids after reloading: tests/unit/test_families.py
    assert json.loads((tmp_path / "processor_config.json").read_text())["image_seq_length"] == fc.GEMMA3_IMAGE_TOKENS
    assert type(AutoProcessor.from_pretrained(tmp_path).image_processor).__name__ == "Gemma3ImageProcessorPil"


# ---------------------------------------------------------------- the real module tree (meta device)
def test_real_4b_has_five_global_layers_and_a_bare_projection_matrix():
    """Size and LoRA counts: tests/unit/test_families.py. The projector has no nn.Linear: it trains whole."""
    config, model = fcs.meta_model("google__gemma-3-4b-it")
    assert config.text_config.layer_types.count("full_attention") == 5  # 5 local : 1 global over 34 layers
    projector = model.get_submodule("model.multi_modal_projector")
    assert not fcs.linears_under(model, "model.multi_modal_projector") and projector.mm_input_projection_weight.shape == (1152, 2560)
    assert [n for n, _ in model.named_modules() if n.endswith("multi_modal_projector")] == ["model.multi_modal_projector"]
