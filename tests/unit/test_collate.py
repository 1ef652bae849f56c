"""Label masks checked against hand-spelled token ids (tests/tiny.py fixes the vocabulary)."""

import pytest
from PIL import Image

import tiny
from vlmtune.training.collate import Collator
from vlmtune.models.prompting import IGNORE, PromptAnswerTokenizer
from vlmtune.errors import VlmtuneError
from vlmtune.models.registry import LLAVA

V = tiny.VOCAB
IMG = V["<image>"]
# <|im_start|> user <image>x5 describe this picture . <|im_end|> <|im_start|> assistant
PROMPT_IDS = [V["<|im_start|>"], V["user"], *[IMG] * 5, V["describe"], V["this"], V["picture"], V["."],
              V["<|im_end|>"], V["<|im_start|>"], V["assistant"]]
ANSWER_IDS = [V["a"], V["white"], V["rook"], V["<|im_end|>"]]


@pytest.fixture(scope="module")
def encoder():
    _, processor = tiny.llava()
    return PromptAnswerTokenizer(processor, LLAVA, max_length=64)


def picture():
    return Image.new("RGB", (40, 30), (200, 0, 0))


def test_prompt_and_image_tokens_masked_answer_and_eos_kept(encoder):
    ex = encoder.encode(picture(), "Describe this picture.", "a white rook")
    assert ex["input_ids"] == PROMPT_IDS + ANSWER_IDS
    assert ex["labels"] == [IGNORE] * len(PROMPT_IDS) + ANSWER_IDS
    assert ex["pixel_values"].shape == (1, 3, tiny.IMAGE_SIZE, tiny.IMAGE_SIZE)


def test_padding_is_masked_and_right_aligned(encoder):
    short = encoder.encode(picture(), "Describe this picture.", "a rook")
    long = encoder.encode(picture(), "Describe this picture.", "a white rook and a black knight")
    batch = Collator(pad_id=V["<pad>"])([short, long])
    n = len(short["input_ids"])
    extra = len(long["input_ids"]) - n
    assert batch["input_ids"][0].tolist() == short["input_ids"] + [V["<pad>"]] * extra
    assert batch["labels"][0].tolist() == short["labels"] + [IGNORE] * extra
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * extra
    assert batch["pixel_values"].shape == (2, 3, tiny.IMAGE_SIZE, tiny.IMAGE_SIZE)


def test_max_length_that_cuts_image_tokens_is_refused(encoder):
    encoder = PromptAnswerTokenizer(encoder.processor, LLAVA, max_length=6)
    with pytest.raises(VlmtuneError, match="would cut image tokens; raise data.max_length to at least 18"):
        encoder.encode(picture(), "Describe this picture.", "a white rook", where="train row 3")


def test_answer_that_does_not_fit_is_refused_with_its_row_and_the_length_it_needs(encoder):
    # 14 prompt tokens + 4 answer tokens (end of turn included): 17 would cut <|im_end|>
    short = PromptAnswerTokenizer(encoder.processor, LLAVA, max_length=len(PROMPT_IDS) + len(ANSWER_IDS) - 1)
    with pytest.raises(VlmtuneError, match=r"^train row 7: prompt \(14 tokens\) \+ answer \(4 tokens .*\) = 18 > "
                                           r"data.max_length=17: .*raise data.max_length to at least 18"):
        short.encode(picture(), "Describe this picture.", "a white rook", where="train row 7")
    exact = PromptAnswerTokenizer(encoder.processor, LLAVA, max_length=len(PROMPT_IDS) + len(ANSWER_IDS))
    ex = exact.encode(picture(), "Describe this picture.", "a white rook")
    assert ex["labels"] == [IGNORE] * len(PROMPT_IDS) + ANSWER_IDS  # fits exactly: end of turn kept


def test_generation_prompt_is_left_padded_and_equals_training_prompt(encoder):
    batch = encoder.encode_prompts([picture(), picture()], ["Describe this picture.", "What is this"])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids[0].tolist() == PROMPT_IDS  # the longer prompt: no padding
    assert mask[1].tolist()[0] == 0 and ids[1].tolist()[-2:] == [V["<|im_start|>"], V["assistant"]]
