"""Qwen2-VL and Qwen2.5-VL: tiny random models with the stock processor classes (minus the video slot)."""

import json

import pytest
from PIL import Image

import families_tiny as ft
import family_cases as fcs
import tiny
from vlmtune.config import load_config
from vlmtune.errors import VlmtuneError
from vlmtune.models.families.qwen import QWEN2_5_VL, QWEN2_VL, QWEN_CHATML
from vlmtune.models.prompting import IGNORE, PromptAnswerTokenizer, user_turn
from vlmtune.stages.train import train_run
from vlmtune.training.collate import Collator

CASES = {"qwen2_vl": (ft.qwen_vl, QWEN2_VL), "qwen2_5_vl": (lambda: ft.qwen_vl("2.5"), QWEN2_5_VL)}
PAD = "<|image_pad|>"
PROMPT, ANSWER = list(fcs.QWEN), ["a", "white", "rook", "<|im_end|>"]  # 56x56 px: 4 image tokens


def square():
    return Image.new("RGB", (56, 56), (30, 160, 90))


@pytest.mark.parametrize("family", sorted(CASES))
def test_mm_token_type_ids_and_grid_hand_computed(family):
    build, spec = CASES[family]
    _, processor = build()
    ex = PromptAnswerTokenizer(processor, spec, 128).encode(square(), "Describe this picture.", "a white rook")
    assert ex["mm_token_type_ids"].tolist() == [[int(t == PAD) for t in PROMPT + ANSWER]]
    assert ex["image_grid_thw"].tolist() == [[1, 4, 4]] and ex["pixel_values"].shape == (16, 3 * 2 * 14 * 14)


@pytest.mark.parametrize("family", sorted(CASES))
def test_mixed_sizes_batch_m_rope_positions_and_padded_token_types(family):
    build, spec = CASES[family]
    model, processor = build()
    enc = PromptAnswerTokenizer(processor, spec, 128)
    big = enc.encode(square(), "Describe this picture.", "a white rook")
    small = enc.encode(Image.new("RGB", (40, 30), (200, 40, 40)), "What is this?", "a rook")  # 28x28: 1 token
    batch = Collator(processor.tokenizer.pad_token_id, spec.seq_keys)([big, small])
    assert batch["pixel_values"].shape == (16 + 4, 1176) and batch["image_grid_thw"].tolist() == [[1, 4, 4], [1, 2, 2]]
    pad = len(big["input_ids"]) - len(small["input_ids"])
    assert batch["mm_token_type_ids"][1].tolist() == small["mm_token_type_ids"][0].tolist() + [0] * pad
    assert batch["labels"][1].tolist() == small["labels"] + [IGNORE] * pad
    positions, _ = model.model.get_rope_index(batch["input_ids"], batch["mm_token_type_ids"], batch["image_grid_thw"],
                                              attention_mask=batch["attention_mask"])
    # the 2x2 image grid starts at text position 15 (temporal, height, width); the text after it resumes at 17
    assert positions[:, 0, 15:20].tolist() == [[15, 15, 15, 15, 17], [15, 15, 16, 16, 17], [15, 16, 15, 16, 17]]


def test_fallback_template_renders_as_the_real_qwen25_template():
    _, processor = ft.qwen_vl("2.5")
    real = json.loads((ft.DATA / "Qwen__Qwen2.5-VL-7B-Instruct/chat_template.json").read_text())["chat_template"]
    turn = user_turn("Describe this picture.")
    render = [processor.apply_chat_template(turn, add_generation_prompt=True, tokenize=False, chat_template=t)
              for t in (real, QWEN_CHATML)]
    assert render[0] == render[1]


def test_too_small_max_length_stops_before_training(tmp_path):
    model_dir = ft.save(*ft.qwen_vl(), tmp_path / "model")
    data = tiny.caption_folder(tmp_path / "data", n=4, test_every=2)
    with pytest.raises(VlmtuneError, match="would cut image tokens") as err:
        train_run(load_config(overrides=[f"model.name={model_dir}", f"data.path={data}", f"output_dir={tmp_path / 'run'}",
                                         "eval.before=false", "data.max_length=16"]))
    assert "\n" not in str(err.value) and not (tmp_path / "run/adapter").exists()
