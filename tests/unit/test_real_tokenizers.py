"""The prompt/answer join with real tokenizers (tests/realtok.py), for every family's chat format.

vlmtune tokenizes the prompt (chat template + image tokens, through the processor) and the answer
(``answer_prefix + answer + end_of_turn``) apart and concatenates them. With a real tokenizer
that join is where SentencePiece "▁", byte-level "Ġ" and a second BOS go wrong. For each family
and a real tokenizer of its LM kind, three properties:

1. ``prompt_ids + answer_ids`` equals the ids of the whole conversation (user turn + assistant
   answer) rendered by the checkpoint's chat template and run through the processor as the
   checkpoint would be (``processor_kwargs`` included), up to the deliberate differences each case
   names (``Case.fix``), with exactly one BOS where the format has one;
2. the label span decodes to exactly ``answer_prefix + answer + end_of_turn``;
3. the left-padded generation batch (``encode_prompts``), less its padding, is the training prompt.

Templates: the hub's where a verbatim copy is at hand (llava-1.5-7b-hf, Qwen2.5-VL-7B-Instruct in
tests/data/model-configs; llava-v1.6-mistral-7b-hf, Idefics2-8b, Idefics3-8B-Llama3 and
SmolVLM-256M-Instruct below, as their chat_template.json files publish them), else the
registry row's own (its fallback / the format it documents). SentencePiece runs twice: as
transformers 5 converts tokenizer.model, and with the hub tokenizer.json's normalizer ("-hub").

Stand-ins and gaps: Mistral's SentencePiece stands in for LLaMA/Vicuna's (same algorithm, other
ids); Gemma 3's for PaliGemma's Gemma 1/2 tokenizer; no Yi tokenizer (llava-v1.6-34b: its ChatML
fallback runs with SmolLM2); Llama-3.2-Vision's hub template is not in the repository (the row's
renders the same text for one picture + text, by reading, not run); multi-turn chat is not covered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Callable

import pytest

import realtok
from families_tiny import DATA
from vlmtune.models import default
from vlmtune.models.families import aya_vision, idefics, llava, mllama, paligemma, qwen
from vlmtune.models.prompting import PromptAnswerTokenizer

PROMPT = "Describe this picture."
# Capitals, punctuation and a digit: pieces that merge differently at a word boundary.
ANSWER = "2 pieces: a white Rook, and a black knight."

LLAVA15 = (DATA / "llava-hf__llava-1.5-7b-hf" / "chat_template.jinja").read_text()
# Qwen2.5-VL-7B-Instruct's; Qwen2-VL-Instruct ships the same text.
QWEN_VL = json.loads((DATA / "Qwen__Qwen2.5-VL-7B-Instruct" / "chat_template.json").read_text())["chat_template"]
# llava-hf/llava-v1.6-mistral-7b-hf chat_template.json.
LLAVA_NEXT_MISTRAL = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + message['content'][0]['text']"
    " + '\\n<</SYS>>\\n\\n' }}{% elif message['role'] == 'user' %}{{ '[INST] ' }}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{# Render all text next #}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{{' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'][0]['text'] + '</s> '}}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
# HuggingFaceM4/idefics2-8b; Idefics3-8B-Llama3 and SmolVLM put "<|begin_of_text|>" / "<|im_start|>" first.
_IDEFICS_BODY = (
    "{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == 'image' %}"
    "{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}"
    "{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
IDEFICS2_8B, IDEFICS3_8B, SMOLVLM = _IDEFICS_BODY, "<|begin_of_text|>" + _IDEFICS_BODY, "<|im_start|>" + _IDEFICS_BODY


# ---------------------------------------------------------------- deliberate differences
def exact(text: str, tok) -> str:
    return text


def drop_newline_after_turn(text: str, tok) -> str:
    """The template's "\\n" after the end-of-turn token separates it from a next turn: the answer
    stops at the end-of-turn token, as generation does (it is the stop token)."""
    assert text.endswith("\n")
    return text.removesuffix("\n")


def drop_space_after_eos(text: str, tok) -> str:
    """llava-v1.6-mistral's template writes "</s> ": the space after EOS is never generated."""
    assert text.endswith(tok.eos_token + " ")
    return text.removesuffix(" ")


def eos_for_closing_space(text: str, tok) -> str:
    """Vicuna v1 (llava-1.5's hub template, the row's VICUNA fallback) closes the answer with " "
    and no EOS; LLaVA's own training format (conv_vicuna_v1, sep2="</s>") closes it with </s>,
    which vlmtune supervises so that the model learns to stop."""
    assert text.endswith(" ") and not text.endswith(tok.eos_token + " ")
    return text.removesuffix(" ") + tok.eos_token


# ---------------------------------------------------------------- references: ids of the whole conversation
def through_processor(case, processor, image, text: str) -> list[int]:
    """``text`` as the checkpoint's processor tokenizes it (image tokens expanded, the row's kwargs)."""
    ids = processor(images=[image], text=[text], **dict(case.spec.processor_kwargs))["input_ids"][0]
    return [int(i) for i in ids]


def rendered(case, processor, image) -> list[int]:
    """The checkpoint's chat template over [user turn, assistant answer], less the case's deliberate differences."""
    template = case.template or case.spec.chat_template
    text = processor.apply_chat_template(conversation(ANSWER), tokenize=False, chat_template=template)
    return through_processor(case, processor, image, case.fix(text, processor.tokenizer))


def idefics_instruct(case, processor, image) -> list[int]:
    """IDEFICS-instruct's (no chat template): "User: ...<end_of_utterance>\\nAssistant: answer<end_of_utterance>"."""
    text = f"User: {PROMPT}<end_of_utterance>\nAssistant: {ANSWER}<end_of_utterance>"
    return through_processor(case, processor, image, text)


def prefix_suffix(case, processor, image) -> list[int]:
    """PaliGemma (no chat template): big_vision's prefix "<image>*N<bos>prompt\\n" + suffix "answer<eos>", one text."""
    tok = processor.tokenizer
    text = processor.image_token * processor.image_seq_length + tok.bos_token + PROMPT + "\n" + ANSWER + tok.eos_token
    return tok(text, add_special_tokens=False)["input_ids"]


@dataclass(frozen=True)
class Case:
    spec: object  # FamilySpec
    processor: Callable  # (tokenizer, template) -> processor
    tokenizer: str  # tests/realtok.py builder
    template: str | None  # the checkpoint's; None: the processor ships none (the row's is used)
    fix: Callable[[str, object], str] = exact
    bos: bool = True  # exactly one BOS (False: none, or ChatML's <|im_start|> doubling as BOS)
    reference: Callable = rendered  # (case, processor, image) -> ids of the whole conversation


CASES = {
    # LLaVA-1.5 (Vicuna = LLaMA SentencePiece; Mistral's SentencePiece stands in, same algorithm).
    "llava-1.5/hub-template/mistral-sp": Case(llava.LLAVA, realtok.llava, "mistral", LLAVA15, eos_for_closing_space),
    "llava-1.5/hub-template/mistral-sp-hub": Case(llava.LLAVA, realtok.llava, "mistral_hub", LLAVA15,
                                                  eos_for_closing_space),
    "llava/VICUNA-fallback/mistral-sp": Case(llava.LLAVA, realtok.llava, "mistral", llava.VICUNA,
                                             eos_for_closing_space),
    "llava/INST-fallback/mistral-sp": Case(llava.LLAVA, realtok.llava, "mistral", llava.INST),
    "llava/INST-fallback/mistral-sp-hub": Case(llava.LLAVA, realtok.llava, "mistral_hub", llava.INST),
    "llava/CHATML-fallback/smollm2": Case(llava.LLAVA, realtok.llava, "smollm2", llava.CHATML, bos=False),
    "aya_vision/embedded-default/smollm2": Case(aya_vision.AYA_VISION, realtok.default_processor, "smollm2",
                                                default.CHAT_TEMPLATE, drop_newline_after_turn, bos=False),
    "llava/embedded-default-llava-layout/smollm2": Case(llava.LLAVA, realtok.default_llava, "smollm2",
                                                        default.CHAT_TEMPLATE, drop_newline_after_turn, bos=False),
    "llava_next/hub-template/mistral-sp": Case(llava.LLAVA_NEXT, realtok.llava_next, "mistral", LLAVA_NEXT_MISTRAL,
                                               drop_space_after_eos),
    "llava_next/INST-fallback/mistral-sp-hub": Case(llava.LLAVA_NEXT, realtok.llava_next, "mistral_hub",
                                                    llava.INST),
    "idefics2/hub-template/mistral-sp": Case(idefics.IDEFICS2, realtok.idefics2, "mistral", IDEFICS2_8B,
                                             drop_newline_after_turn),
    "idefics2/hub-template/mistral-sp-hub": Case(idefics.IDEFICS2, realtok.idefics2, "mistral_hub", IDEFICS2_8B,
                                                 drop_newline_after_turn),
    "idefics3/hub-template/llama3": Case(idefics.IDEFICS3, realtok.idefics3, "llama3", IDEFICS3_8B,
                                         drop_newline_after_turn),
    "idefics3/row-template/llama3": Case(idefics.IDEFICS3, realtok.idefics3, "llama3", None, drop_newline_after_turn),
    "idefics3/smolvlm-hub-template/smollm2": Case(idefics.IDEFICS3, realtok.smolvlm_as_idefics3, "smollm2", SMOLVLM,
                                                  drop_newline_after_turn, bos=False),
    "smolvlm/hub-template/smollm2": Case(idefics.SMOLVLM, realtok.smolvlm, "smollm2", SMOLVLM, drop_newline_after_turn,
                                         bos=False),
    "qwen2_vl/hub-template/qwen2": Case(qwen.QWEN2_VL, realtok.qwen_vl, "qwen2", QWEN_VL, drop_newline_after_turn,
                                        bos=False),
    "qwen2_vl/row-template/qwen2": Case(qwen.QWEN2_VL, realtok.qwen_vl, "qwen2", None, drop_newline_after_turn,
                                        bos=False),
    "qwen2_5_vl/hub-template/qwen2": Case(qwen.QWEN2_5_VL, lambda tok, t: realtok.qwen_vl(tok, t, "2.5"), "qwen2",
                                          QWEN_VL, drop_newline_after_turn, bos=False),
    "mllama/row-template/llama3": Case(mllama.MLLAMA, realtok.mllama, "llama3", None),
    "idefics/instruct-format/mistral-sp": Case(idefics.IDEFICS, realtok.idefics, "mistral", None,
                                               reference=idefics_instruct),
    "idefics/instruct-format/mistral-sp-hub": Case(idefics.IDEFICS, realtok.idefics, "mistral_hub", None,
                                                   reference=idefics_instruct),
    "paligemma/prefix-suffix/gemma3": Case(paligemma.PALIGEMMA, realtok.paligemma, "gemma3", None,
                                            reference=prefix_suffix),
}


@cache
def built(name: str):
    case = CASES[name]
    processor = case.processor(getattr(realtok, case.tokenizer)(), case.template)
    return case, processor, PromptAnswerTokenizer(processor, case.spec, max_length=4096)


def split(example: dict) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of a training example: the answer is the supervised tail."""
    labels, ids = example["labels"], example["input_ids"]
    start = next(i for i, label in enumerate(labels) if label != -100)
    assert all(label != -100 for label in labels[start:]) and labels[start:] == ids[start:]
    return ids[:start], ids[start:]


def conversation(answer: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]}]


@pytest.mark.parametrize("name", CASES)
def test_prompt_plus_answer_is_the_rendered_conversation(name):
    case, processor, enc = built(name)
    image = realtok.picture((40, 30))
    prompt_ids, answer_ids = split(enc.encode(image, PROMPT, ANSWER))
    tok = processor.tokenizer
    reference = case.reference(case, processor, image)
    assert prompt_ids + answer_ids == reference, (
        f"\njoined   : {tok.convert_ids_to_tokens(prompt_ids[-4:] + answer_ids)}"
        f"\nreference: {tok.convert_ids_to_tokens(reference[len(prompt_ids) - 4:])}")
    if case.bos:  # exactly one BOS (a template writing it + a tokenizer adding it = two)
        assert prompt_ids.count(tok.bos_token_id) == 1


@pytest.mark.parametrize("name", CASES)
def test_label_span_decodes_to_answer_and_end_of_turn(name):
    case, processor, enc = built(name)
    _, answer_ids = split(enc.encode(realtok.picture((40, 30)), PROMPT, ANSWER))
    decoded = processor.tokenizer.decode(answer_ids, skip_special_tokens=False)
    assert decoded == case.spec.answer_prefix + ANSWER + enc.end_of_turn()
    assert answer_ids[-1] == processor.tokenizer.convert_tokens_to_ids(enc.end_of_turn())  # one token, the stop token


@pytest.mark.parametrize("name", CASES)
def test_generation_prompt_is_the_training_prompt(name):
    _, _, enc = built(name)
    images = [realtok.picture((40, 30), 1), realtok.picture((30, 60), 2)]  # different image token counts
    prompts = [PROMPT, "What is in this picture, in a few words?"]
    batch = enc.encode_prompts(images, prompts)
    assert (batch["attention_mask"][:, 0] == 0).any()  # left-padded: the rows differ in length
    for row, (image, prompt) in enumerate(zip(images, prompts)):
        ids = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
        assert batch["attention_mask"][row][-1] == 1  # padding on the left only
        assert ids == split(enc.encode(image, prompt, ANSWER))[0]


# A row's own template is what a checkpoint without one gets: it must prompt as the hub's does.
ROW_VS_HUB = {  # case (for its processor) -> (the row's template, the hub's)
    "llava-1.5/hub-template/mistral-sp": (llava.VICUNA, LLAVA15),
    "llava_next/hub-template/mistral-sp": (llava.INST, LLAVA_NEXT_MISTRAL),
    "idefics2/hub-template/mistral-sp": (idefics.IDEFICS2.chat_template, IDEFICS2_8B),
    "idefics3/hub-template/llama3": (idefics.IDEFICS3.chat_template, IDEFICS3_8B),
    "smolvlm/hub-template/smollm2": (idefics.SMOLVLM.chat_template, SMOLVLM),
    "qwen2_vl/hub-template/qwen2": (qwen.QWEN2_VL.chat_template, QWEN_VL),
}


@pytest.mark.parametrize("name", ROW_VS_HUB)
def test_row_template_prompts_as_the_hub_template(name):
    _, processor, _ = built(name)
    row, hub = ROW_VS_HUB[name]
    turn = conversation(ANSWER)[:1]
    texts = [processor.apply_chat_template(turn, add_generation_prompt=True, tokenize=False, chat_template=t)
             for t in (row, hub)]
    assert texts[0] == texts[1]


# Ids that the hub's own tokenizer files give, as published in other projects' tests: they pin the
# conversions in tests/realtok.py (pattern, special-token ids, where "▁" goes) to the real thing.
MISTRAL_TURN = "[INST] Hello, how are you? [/INST]I'm doing great. How can I help you today?</s>"
PUBLISHED = {  # tokenizer -> (text, add_special_tokens, ids)
    # transformers.js tests: Xenova/mistral-tokenizer-v1 (a hub tokenizer.json), the first turn of its chat example
    # (there the template writes "<s>"; here the tokenizer adds it: see the next test for the difference).
    "mistral": (MISTRAL_TURN, True, [1, 733, 16289, 28793, 22557, 28725, 910, 460, 368, 28804, 733, 28748, 16289, 28793,
                               28737, 28742, 28719, 2548, 1598, 28723, 1602, 541, 315, 1316, 368, 3154, 28804, 2]),
    # the same project, Xenova/Meta-Llama-3.1-Tokenizer (digits in threes: "2023" -> 2366, 18).
    "llama3": ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
               "Today Date: 26 Jul 2024\n\nYou are a bot that responds to weather queries.<|eot_id|><|start_header_id|>"
               "user<|end_header_id|>\n\nHey, what's the temperature in Paris right now?<|eot_id|>", False,
               [128000, 128006, 9125, 128007, 271, 38766, 1303, 33025, 2696, 25, 6790, 220, 2366, 18, 198, 15724, 2696,
                25, 220, 1627, 10263, 220, 2366, 19, 271, 2675, 527, 264, 11164, 430, 31680, 311, 9282, 20126, 13,
                128009, 128006, 882, 128007, 271, 19182, 11, 1148, 596, 279, 9499, 304, 12366, 1314, 1457, 30, 128009]),
    # transformers' Qwen2.5-VL integration test (expected input_ids, first 17) and a Qwen2.5 vLLM tokenize log.
    "qwen2": ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
              "<|image_pad|><|image_pad|>你好<|im_end|>\n<|im_start|>assistant\n", False,
              [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 151652, 151655,
               151655, 108386, 151645, 198, 151644, 77091, 198]),
}
PUBLISHED["mistral_hub"] = PUBLISHED["mistral"]


@pytest.mark.parametrize("name", PUBLISHED)
def test_converted_tokenizers_match_published_ids(name):
    text, specials, expected = PUBLISHED[name]
    assert getattr(realtok, name)()(text, add_special_tokens=specials)["input_ids"] == expected


def test_the_two_sentencepiece_variants_differ_after_an_added_token():
    """Why the "-hub" cases exist: after an added token only the hub's normalizer puts "▁" (as published)."""
    text, _, expected = PUBLISHED["mistral"]
    ids = {name: getattr(realtok, name)()("<s>" + text, add_special_tokens=False)["input_ids"]
           for name in ("mistral", "mistral_hub")}
    assert ids["mistral_hub"] == expected
    assert ids["mistral"][:2] == [1, 28792] and ids["mistral"][2:] == expected[2:]  # "[" for "▁["
