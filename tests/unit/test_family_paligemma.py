"""PaliGemma: prefix-LM, labels and token_type_ids built by its own processor; tiny random model."""

import pytest
import torch
from PIL import Image

import families_tiny as ft
import tiny
from vlmtune.config import load_config
from vlmtune.training.collate import Collator
from vlmtune.models.prompting import IGNORE, PromptAnswerTokenizer
from vlmtune.errors import VlmtuneError
from vlmtune.models.families.paligemma import PALIGEMMA
from vlmtune.models.loading import load_for_inference
from vlmtune.stages.train import train_run

# <image> x 4 (2x2 SigLIP patches) + bos + prompt + "\n": the prefix (token type 0); answer + eos: the suffix (1).
PROMPT = ["<image>"] * ft.PALIGEMMA_IMAGE_TOKENS + ["<bos>", "describe", "this", "picture", ".", "\n"]
ANSWER = ["a", "white", "rook", "<eos>"]


def picture(colour=(30, 60, 200)):
    return Image.new("RGB", (40, 30), colour)


def token_ids(processor, tokens: list[str]) -> list[int]:
    return processor.tokenizer.convert_tokens_to_ids(tokens)


@pytest.fixture(scope="module")
def processor():
    return ft.paligemma()[1]


def test_prefix_layout_labels_and_token_types_hand_computed(processor):
    enc = PromptAnswerTokenizer(processor, PALIGEMMA, 64)
    assert enc.prompt_text("Describe this picture.") == "<image>Describe this picture."
    ex = enc.encode(picture(), "Describe this picture.", "a white rook")
    assert ex["input_ids"] == token_ids(processor, PROMPT + ANSWER)
    assert ex["labels"] == [IGNORE] * len(PROMPT) + token_ids(processor, ANSWER)
    assert ex["token_type_ids"].tolist() == [[0] * len(PROMPT) + [1] * len(ANSWER)]
    assert ex["pixel_values"].shape == (1, 3, ft.TILE, ft.TILE) and ex["truncated"] is False


def test_collator_pads_token_types_with_the_sequence(processor):
    enc = PromptAnswerTokenizer(processor, PALIGEMMA, 64)
    short = enc.encode(picture(), "Describe this picture.", "a rook")
    long = enc.encode(picture(), "Describe this picture.", "a white queen and a black pawn")
    batch = Collator(processor.tokenizer.pad_token_id, PALIGEMMA.seq_keys)([short, long])
    extra = len(long["input_ids"]) - len(short["input_ids"])
    assert batch["token_type_ids"][0].tolist() == short["token_type_ids"][0].tolist() + [0] * extra
    assert batch["labels"][0].tolist() == short["labels"] + [IGNORE] * extra
    assert batch["attention_mask"][0].tolist() == [1] * len(short["input_ids"]) + [0] * extra


def test_generation_prompt_is_the_training_prefix_left_padded(processor):
    batch = PromptAnswerTokenizer(processor, PALIGEMMA).encode_prompts([picture(), picture()], ["Describe this picture.", "What?"])
    assert batch["input_ids"][0].tolist() == token_ids(processor, PROMPT)
    assert batch["attention_mask"][1].tolist()[0] == 0 and batch["token_type_ids"].sum() == 0


def test_max_length_cutting_the_prefix_is_refused_and_answers_truncate_after_it(processor):
    with pytest.raises(VlmtuneError, match="train row 2: .* would cut image tokens; raise data.max_length to at least 14"):
        PromptAnswerTokenizer(processor, PALIGEMMA, 8).encode(picture(), "Describe this picture.", "a white rook", where="train row 2")
    cut = PromptAnswerTokenizer(processor, PALIGEMMA, len(PROMPT) + 2).encode(picture(), "Describe this picture.", "a white rook")
    assert cut["truncated"] and cut["labels"] == [IGNORE] * len(PROMPT) + token_ids(processor, ANSWER[:2])
    assert cut["token_type_ids"].shape == (1, len(PROMPT) + 2)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Two LoRA steps (lm+vision+projector, gradient checkpointing on)."""
    return ft.two_lora_steps(ft.paligemma, PALIGEMMA, tmp_path_factory.mktemp("paligemma"))


def test_two_lora_steps_with_checkpointing_move_only_adapters_and_projector(fitted):
    after = fitted["after"]
    assert fitted["model"].get_base_model().is_gradient_checkpointing
    moved = ft.moved(fitted["before"], after)
    assert {n for n in moved if "lora_" not in n and "modules_to_save" not in n} == set()
    vision = {n for n in after if "lora_B" in n and "vision_tower" in n}
    assert len(vision) == 2 * 6 and vision <= moved  # last_hidden_state: every SigLIP layer feeds the projector
    assert len({n for n in after if "lora_B" in n and "language_model" in n} & moved) == 2 * 7
    assert {n for n in after if "multi_modal_projector.modules_to_save" in n} <= moved


def test_saved_adapter_reloads_to_identical_logits(fitted, tmp_path):
    want, got, base = ft.adapter_round_trip(fitted, PALIGEMMA, tmp_path / "adapter")
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.allclose(base, want)


def test_left_padded_batch_generates_what_single_prompts_do():
    batch, single = ft.padded_equals_single(*ft.paligemma(), PALIGEMMA)
    assert batch == single and len(batch) == 2


def test_vlmtune_train_runs_end_to_end_and_stops_on_a_too_small_max_length(tmp_path):
    model_dir = ft.save(*ft.paligemma(), tmp_path / "model")
    data = tiny.caption_folder(tmp_path / "data", n=4, test_every=2)
    common = [f"model.name={model_dir}", f"data.path={data}", "train.max_steps=2", "train.batch_size=2",
              "train.save_steps=-1", "train.bf16=false", "train.eval_each_epoch=false", "eval.max_new_tokens=3",
              "eval.before=false", "train.lora.targets=lm+vision+projector"]
    metrics = train_run(load_config(overrides=[*common, f"output_dir={tmp_path / 'run'}"]))
    assert metrics["family"] == "paligemma" and (tmp_path / "run/adapter/adapter_model.safetensors").is_file()
    assert load_for_inference(tmp_path / "run", dtype="fp32", device=torch.device("cpu"))[2] is PALIGEMMA
    with pytest.raises(VlmtuneError, match="would cut image tokens") as err:
        train_run(load_config(overrides=[*common, f"output_dir={tmp_path / 'short'}", "data.max_length=16",
                                         "data.prompt='Describe this picture in a few words, in a few words.'"]))
    assert "\n" not in str(err.value) and not (tmp_path / "short/adapter").exists()
