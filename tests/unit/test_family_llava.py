"""LLaVA-1.5 (the ``llava`` row) and LLaVA-NeXT (``llava_next``): tiny random models, real processor classes."""

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import family_cases as fcs
import families_tiny as ft
import tiny
from vlmtune.config import ModelConfig, load_config
from vlmtune.training.collate import Collator
from vlmtune.models.prompting import IGNORE, PromptAnswerTokenizer, user_turn
from vlmtune.errors import VlmtuneError
from vlmtune.models.families.llava import CHATML, INST, LLAVA_NEXT, VICUNA
from vlmtune.models.loading import load_for_inference, load_model
from vlmtune.models.lora import apply_plan
from vlmtune.stages.train import train_run

IMAGE = "<image>"
# Square 56 px picture. LLaVA-NeXT picks the 2x2 tile grid: base view 2x2 = 4, tiles 4x4 features
# (square: nothing to unpad) + one image_newline per feature row (4) = 24 tokens.
NEXT_IMAGE = [IMAGE] * (4 + 16 + 4)
NEXT_PROMPTS = {  # mistral's is the shared entry's (tests/family_cases.py)
    "mistral": list(fcs.LLAVA_NEXT),
    "vicuna": ["<s>", "user", ":", *NEXT_IMAGE, "\n", "describe", "this", "picture", ".", "assistant", ":"],
    "yi": ["<|startoftext|>", "<|im_start|>", "system", "\n", "answer", "the", "questions", ".", "<|im_end|>",
           "<|im_start|>", "user", "\n", *NEXT_IMAGE, "\n", "describe", "this", "picture", ".", "<|im_end|>",
           "<|im_start|>", "assistant", "\n"],
}


def square(colour=(200, 30, 30)):
    return Image.new("RGB", (56, 56), colour)


@pytest.mark.parametrize("lm", sorted(NEXT_PROMPTS))
def test_llava_next_labels_for_each_language_model(lm):
    _, processor = ft.llava_next(lm)
    eos = processor.tokenizer.eos_token
    ex = PromptAnswerTokenizer(processor, LLAVA_NEXT, 128).encode(square(), "Describe this picture.", "a white rook")
    answer = ["a", "white", "rook", eos]
    assert ex["input_ids"] == fcs.token_ids(processor, NEXT_PROMPTS[lm] + answer)
    assert ex["labels"] == [IGNORE] * len(NEXT_PROMPTS[lm]) + fcs.token_ids(processor, answer)
    assert ex["pixel_values"].shape == (1, 5, 3, ft.TILE, ft.TILE)  # base view + 2x2 tiles


def test_llava_next_batch_of_mixed_image_sizes_pads_tiles_and_changes_nothing():
    model, processor = ft.llava_next()
    enc = PromptAnswerTokenizer(processor, LLAVA_NEXT, 128)
    big = enc.encode(square(), "Describe this picture.", "a white rook")
    wide = enc.encode(Image.new("RGB", (56, 28), (20, 90, 200)), "What is this?", "a rook")
    # 1x2 tiles: base 4 + features 2 rows x 4 + 2 newlines = 14 image tokens, 3 views
    assert wide["input_ids"].count(fcs.token_ids(processor, [IMAGE])[0]) == 14
    batch = Collator(processor.tokenizer.pad_token_id)([big, wide])
    assert batch["pixel_values"].shape == (2, 5, 3, ft.TILE, ft.TILE)
    assert batch["pixel_values"][1, 3:].abs().sum() == 0  # zero-padded tile slots
    assert batch["image_sizes"].tolist() == [[56, 56], [28, 56]]
    alone = Collator(processor.tokenizer.pad_token_id)([wide])
    with torch.no_grad():
        both = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        single = model(**{k: v for k, v in alone.items() if k != "labels"}).logits
    torch.testing.assert_close(both[1, : len(wide["input_ids"])], single[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("lm,template,text", [
    ("mistral", INST, "[INST] <image>\nDescribe this picture. [/INST]"),
    ("vicuna", VICUNA, "USER: <image>\nDescribe this picture. ASSISTANT:"),
    ("yi", CHATML, "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\n"
                   "Describe this picture.<|im_end|><|im_start|>assistant\n"),
])
def test_fallback_template_is_chosen_from_config_and_tokenizer(tmp_path, lm, template, text):
    ft.save(*ft.llava_next(lm, template=False), tmp_path)
    assert "chat_template" not in json.loads((tmp_path / "processor_config.json").read_text())
    _, processor, spec, _ = load_model(ModelConfig(name=str(tmp_path)), training=True, device=torch.device("cpu"))
    assert spec is LLAVA_NEXT and processor.chat_template == template
    assert PromptAnswerTokenizer(processor, spec).prompt_text("Describe this picture.") == text


def test_vicuna_fallback_renders_as_the_real_llava15_template():
    _, processor = ft.llava15()  # carries llava-1.5-7b-hf's own chat_template.jinja
    real = processor.apply_chat_template(user_turn("Describe this picture."), add_generation_prompt=True, tokenize=False)
    ours = processor.apply_chat_template(user_turn("Describe this picture."), add_generation_prompt=True,
                                         tokenize=False, chat_template=VICUNA)
    assert ours == real == "USER: <image>\nDescribe this picture. ASSISTANT:"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Two LoRA steps (lm+vision+projector, gradient checkpointing on) on the tiny LLaVA-NeXT."""
    return fcs.two_lora_steps(fcs.case("llava_next"), tmp_path_factory.mktemp("next"))


def test_image_newline_trains_and_is_saved_in_the_adapter(fitted, tmp_path):
    key = "base_model.model.model.image_newline"
    trained = fitted["after"][key]
    assert not torch.equal(trained, fitted["before"]["model.image_newline"])
    fitted["model"].save_pretrained(tmp_path / "adapter")
    assert torch.equal(load_file(tmp_path / "adapter/adapter_model.safetensors")[key], trained)
    reloaded, _, _ = load_for_inference(tmp_path / "adapter", dtype="fp32", device=torch.device("cpu"))
    assert torch.equal(reloaded.get_base_model().model.image_newline, trained)
    # Trainer's resume path: load_adapter into a freshly planned model
    from transformers import LlavaNextForConditionalGeneration

    fresh = apply_plan(LlavaNextForConditionalGeneration.from_pretrained(fitted["base_dir"]), LLAVA_NEXT,
                       load_config(overrides=["train.lora.targets=lm+vision+projector"]).train.lora)
    fresh.load_adapter(str(tmp_path / "adapter"), "default", is_trainable=True)
    newline = fresh.get_base_model().model.image_newline
    assert torch.equal(newline, trained) and newline.requires_grad


@pytest.mark.parametrize("targets,trains", [("projector", True), ("lm+projector", True), ("lm", False)])
def test_image_newline_trains_only_with_the_projector(targets, trains):
    model, _ = ft.llava_next()
    trained = apply_plan(model, LLAVA_NEXT, load_config(overrides=[f"train.lora.targets={targets}"]).train.lora)
    params = dict(trained.named_parameters())
    key = "base_model.model.model.image_newline" if "lm" in targets else "model.image_newline"
    assert params[key].requires_grad is trains


@pytest.mark.parametrize("override,message", [
    ("model.family=llava_nxt", "model.family='llava_nxt' is unknown"),
    ("train.lora.targets=vision", "train.lora.targets='vision' is invalid"),
    ("data.max_length=16", "would cut image tokens"),
])
def test_mistakes_stop_before_training_with_one_line(tmp_path, override, message):
    model_dir = ft.save(*ft.llava_next(), tmp_path / "model")
    data = tiny.caption_folder(tmp_path / "data", n=4, test_every=2)
    with pytest.raises(VlmtuneError, match=message) as err:
        train_run(load_config(overrides=[f"model.name={model_dir}", f"data.path={data}", f"output_dir={tmp_path / 'run'}",
                                         "eval.before=false", override]))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run/checkpoints").exists() or not any((tmp_path / "run/checkpoints").iterdir())
