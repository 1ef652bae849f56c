"""PaliGemma: prefix-LM, labels and token_type_ids built by its own processor; tiny random model."""

import pytest
from PIL import Image

import families_tiny as ft
import family_cases as fcs
import tiny
from vlmtune.config import load_config
from vlmtune.errors import VlmtuneError
from vlmtune.models.families.paligemma import PALIGEMMA
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.stages.train import train_run
from vlmtune.training.collate import Collator

# <image> x 4 (2x2 SigLIP patches) + bos + prompt + "\n": the prefix (token type 0); answer + eos: the suffix (1).
PROMPT, ANSWER = list(fcs.PALIGEMMA), ["a", "white", "rook", "<eos>"]


def picture(colour=(30, 60, 200)):
    return Image.new("RGB", (40, 30), colour)


@pytest.fixture(scope="module")
def processor():
    return ft.paligemma()[1]


def test_prefix_layout_and_token_types_hand_computed(processor):
    enc = PromptAnswerTokenizer(processor, PALIGEMMA, 64)
    assert enc.prompt_text("Describe this picture.") == "<image>Describe this picture."
    ex = enc.encode(picture(), "Describe this picture.", "a white rook")
    assert ex["token_type_ids"].tolist() == [[0] * len(PROMPT) + [1] * len(ANSWER)]
    assert ex["pixel_values"].shape == (1, 3, ft.TILE, ft.TILE) and ex["truncated"] is False


def test_collator_pads_token_types_with_the_sequence(processor):
    enc = PromptAnswerTokenizer(processor, PALIGEMMA, 64)
    short = enc.encode(picture(), "Describe this picture.", "a rook")
    long = enc.encode(picture(), "Describe this picture.", "a white queen and a black pawn")
    batch = Collator(processor.tokenizer.pad_token_id, PALIGEMMA.seq_keys)([short, long])
    extra = len(long["input_ids"]) - len(short["input_ids"])
    assert batch["token_type_ids"][0].tolist() == short["token_type_ids"][0].tolist() + [0] * extra


def test_generation_prompt_is_the_training_prefix_left_padded(processor):
    batch = PromptAnswerTokenizer(processor, PALIGEMMA).encode_prompts([picture(), picture()], ["Describe this picture.", "What?"])
    assert batch["input_ids"][0].tolist() == fcs.token_ids(processor, PROMPT)
    assert batch["attention_mask"][1].tolist()[0] == 0 and batch["token_type_ids"].sum() == 0


def test_vlmtune_train_stops_on_a_too_small_max_length(tmp_path):
    model_dir = ft.save(*ft.paligemma(), tmp_path / "model")
    data = tiny.caption_folder(tmp_path / "data", n=4, test_every=2)
    with pytest.raises(VlmtuneError, match="would cut image tokens") as err:
        train_run(load_config(overrides=[
            f"model.name={model_dir}", f"data.path={data}", f"output_dir={tmp_path / 'short'}", "eval.before=false",
            "data.max_length=16", "data.prompt='Describe this picture in a few words, in a few words.'"]))
    assert "\n" not in str(err.value) and not (tmp_path / "short/adapter").exists()
