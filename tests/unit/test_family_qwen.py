"""Qwen2-VL and Qwen2.5-VL: tiny random models with the stock processor classes (minus the video slot)."""

import json

import pytest
import torch
from PIL import Image

import families_tiny as ft
import tiny
from vlmtune.config import ModelConfig, load_config
from vlmtune.training.collate import Collator
from vlmtune.models.prompting import IGNORE, PromptAnswerTokenizer, user_turn
from vlmtune.errors import VlmtuneError
from vlmtune.models.families.qwen import QWEN2_5_VL, QWEN2_VL, QWEN_CHATML
from vlmtune.models.loading import load_for_inference, load_model
from vlmtune.stages.train import train_run

CASES = {"qwen2_vl": (ft.qwen_vl, QWEN2_VL), "qwen2_5_vl": (lambda: ft.qwen_vl("2.5"), QWEN2_5_VL)}
STOCK = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor"}
PAD = "<|image_pad|>"
# 56x56 px: 4x4 patches of 14 px, merged 2x2 -> 4 image tokens. Stock system turn, ChatML.
PROMPT = ["<|im_start|>", "system", "\n", "you", "are", "a", "helpful", "assistant", ".", "<|im_end|>", "\n",
          "<|im_start|>", "user", "\n", "<|vision_start|>", *[PAD] * 4, "<|vision_end|>",
          "describe", "this", "picture", ".", "<|im_end|>", "\n", "<|im_start|>", "assistant", "\n"]
ANSWER = ["a", "white", "rook", "<|im_end|>"]


def square():
    return Image.new("RGB", (56, 56), (30, 160, 90))


def token_ids(processor, tokens: list[str]) -> list[int]:
    return processor.tokenizer.convert_tokens_to_ids(tokens)


@pytest.mark.parametrize("family", sorted(CASES))
def test_labels_and_mm_token_type_ids_hand_computed(family):
    build, spec = CASES[family]
    _, processor = build()
    ex = PromptAnswerTokenizer(processor, spec, 128).encode(square(), "Describe this picture.", "a white rook")
    assert ex["input_ids"] == token_ids(processor, PROMPT + ANSWER)
    assert ex["labels"] == [IGNORE] * len(PROMPT) + token_ids(processor, ANSWER)
    assert ex["mm_token_type_ids"].tolist() == [[int(t == PAD) for t in PROMPT + ANSWER]]
    assert ex["image_grid_thw"].tolist() == [[1, 4, 4]] and ex["pixel_values"].shape == (16, 3 * 2 * 14 * 14)


@pytest.mark.parametrize("family", sorted(CASES))
def test_mixed_sizes_batch_m_rope_positions_and_padding(family):
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
    alone = Collator(processor.tokenizer.pad_token_id, spec.seq_keys)([small])
    with torch.no_grad():
        both = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        single = model(**{k: v for k, v in alone.items() if k != "labels"}).logits
    torch.testing.assert_close(both[1, : len(small["input_ids"])], single[0], rtol=0, atol=1e-4)


def test_fallback_template_renders_as_the_real_qwen25_template():
    _, processor = ft.qwen_vl("2.5")
    real = json.loads((ft.DATA / "Qwen__Qwen2.5-VL-7B-Instruct/chat_template.json").read_text())["chat_template"]
    turn = user_turn("Describe this picture.")
    render = [processor.apply_chat_template(turn, add_generation_prompt=True, tokenize=False, chat_template=t)
              for t in (real, QWEN_CHATML)]
    assert render[0] == render[1]


@pytest.mark.parametrize("family", sorted(CASES))
def test_processor_saves_as_the_stock_class_and_loads_without_torchvision(tmp_path, family):
    build, spec = CASES[family]
    ft.save(*build(), tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == STOCK[family]
    _, processor, loaded_spec, _ = load_model(ModelConfig(name=str(tmp_path)), training=True, device=torch.device("cpu"))
    assert loaded_spec is spec and processor.chat_template == QWEN_CHATML
    assert PromptAnswerTokenizer(processor, spec).encode(square(), "Describe this picture.", "a white rook")["input_ids"] == \
        token_ids(processor, PROMPT + ANSWER)


@pytest.fixture(scope="module", params=sorted(CASES))
def fitted(request, tmp_path_factory):
    """Two LoRA steps (lm+vision+projector, gradient checkpointing on) per version."""
    build, spec = CASES[request.param]
    return {**ft.two_lora_steps(build, spec, tmp_path_factory.mktemp(request.param)), "spec": spec}


def test_two_lora_steps_with_checkpointing_move_only_adapters_and_merger(fitted):
    after = fitted["after"]
    assert fitted["model"].get_base_model().is_gradient_checkpointing
    moved = ft.moved(fitted["before"], after)
    assert {n for n in moved if "lora_" not in n and "modules_to_save" not in n} == set()
    vision = {n for n in after if "lora_B" in n and "visual.blocks" in n}
    per_block = len(fitted["spec"].vision_leaves)
    assert len(vision) == 2 * per_block and vision <= moved  # every block feeds the merger
    assert not any("lora_" in n and ("patch_embed" in n or "merger" in n) for n in after)
    assert {n for n in after if "lora_B" in n and "language_model" in n} <= moved
    assert {n for n in after if "merger.modules_to_save" in n} <= moved


def test_saved_adapter_reloads_to_identical_logits(fitted, tmp_path):
    want, got, base = ft.adapter_round_trip(fitted, fitted["spec"], tmp_path / "adapter")
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.allclose(base, want)


@pytest.mark.parametrize("family", sorted(CASES))
def test_left_padded_batch_generates_what_single_prompts_do(family):
    build, spec = CASES[family]
    batch, single = ft.padded_equals_single(*build(), spec)
    assert batch == single and len(batch) == 2


@pytest.mark.parametrize("family", sorted(CASES))
def test_max_length_cutting_image_tokens_is_refused_and_answers_truncate_after_the_prompt(family):
    build, spec = CASES[family]
    _, processor = build()
    least = len(PROMPT) + len(ANSWER)
    with pytest.raises(VlmtuneError, match=f"would cut image tokens; raise data.max_length to at least {least}"):
        PromptAnswerTokenizer(processor, spec, 16).encode(square(), "Describe this picture.", "a white rook", where="train row 0")
    cut = PromptAnswerTokenizer(processor, spec, len(PROMPT) + 2).encode(square(), "Describe this picture.", "a white rook")
    assert cut["truncated"] and cut["labels"] == [IGNORE] * len(PROMPT) + token_ids(processor, ANSWER[:2])
    assert cut["mm_token_type_ids"].shape == (1, len(PROMPT) + 2)


@pytest.mark.parametrize("family", sorted(CASES))
def test_vlmtune_train_runs_end_to_end(tmp_path, family):
    model_dir = ft.save(*CASES[family][0](), tmp_path / "model")
    data = tiny.caption_folder(tmp_path / "data", n=4, test_every=2)
    metrics = train_run(load_config(overrides=[
        f"model.name={model_dir}", f"data.path={data}", f"output_dir={tmp_path / 'run'}", "train.max_steps=2",
        "train.batch_size=2", "train.save_steps=-1", "train.bf16=false", "train.eval_each_epoch=false",
        "eval.max_new_tokens=3", "eval.before=false", "train.lora.targets=lm+vision+projector"]))
    assert metrics["family"] == family and (tmp_path / "run/adapter/adapter_model.safetensors").is_file()
    _, _, spec = load_for_inference(tmp_path / "run", dtype="fp32", device=torch.device("cpu"))
    assert spec is CASES[family][1]


def test_too_small_max_length_stops_before_training(tmp_path):
    model_dir = ft.save(*ft.qwen_vl(), tmp_path / "model")
    data = tiny.caption_folder(tmp_path / "data", n=4, test_every=2)
    with pytest.raises(VlmtuneError, match="would cut image tokens") as err:
        train_run(load_config(overrides=[f"model.name={model_dir}", f"data.path={data}", f"output_dir={tmp_path / 'run'}",
                                         "eval.before=false", "data.max_length=16"]))
    assert "\n" not in str(err.value) and not (tmp_path / "run/adapter").exists()
