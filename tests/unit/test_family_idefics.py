"""IDEFICS (v1), Idefics2, Idefics3 and SmolVLM rows on tiny random models with their real processor classes.

Token ids are spelled out by hand from the fixed vocabularies of tests/families_tiny_b.py.
"""

import pytest
import torch

import families_tiny_b as tiny
from vlmtune.config import EvalConfig, load_config
from vlmtune.training.collate import Collator
from vlmtune.models.prompting import IGNORE, PromptAnswerTokenizer
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation.generate import generate_answers
from vlmtune.models.lora import apply_plan
from vlmtune.models.registry import REGISTRY, family_for

FAMILIES = ["idefics", "idefics2", "idefics3", "smolvlm"]
CPU = torch.device("cpu")  # fp32 and the same device as the test batches, also where a GPU is present
FAKE, IMG = "<fake_token_around_image>", "<image>"
TEXT = ["describe", "this", "picture", ".", "<end_of_utterance>", "assistant", ":"]
ANSWER = ["a", "white", "rook", "<end_of_utterance>"]


def idefics3_grid(bos: str) -> list[str]:
    # A 60x30 picture -> 64x32 -> one row of two 32px tiles + the whole picture, 4 tokens each.
    tiles = [FAKE, "<row_1_col_1>", *[IMG] * 4, FAKE, "<row_1_col_2>", *[IMG] * 4]
    return [bos, "user", ":", *tiles, FAKE, "<global-img>", *[IMG] * 4, FAKE, *TEXT]


# family -> (picture size, prompt tokens). One BOS each: IDEFICS' processor writes it and tokenizes
# without special tokens; Idefics2's tokenizer adds it; Idefics3/SmolVLM templates write it.
PROMPTS = {
    "idefics": ((40, 30), ["<s>", FAKE, IMG, FAKE, "user", ":", *TEXT[:5], "assistant", ":"]),
    # 4 crops + the whole picture, 4 perceiver latents each
    "idefics2": ((40, 30), ["<s>", "user", ":", *([FAKE, *[IMG] * 4] * 5), FAKE, *TEXT]),
    "idefics3": ((60, 30), idefics3_grid("<|begin_of_text|>")),
    "smolvlm": ((60, 30), idefics3_grid("<|im_start|>")),
}


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    model, processor = tiny.FAMILIES[request.param](0)
    return REGISTRY[request.param], model, processor


def test_rows_are_chosen_by_model_type(family):
    spec, model, _ = family
    assert family_for(model.config.model_type) is spec


def test_prompt_and_image_tokens_masked_answer_and_end_of_utterance_kept(family):
    spec, _, processor = family
    size, prompt = PROMPTS[spec.name]
    ex = PromptAnswerTokenizer(processor, spec, 128).encode(tiny.picture(size), tiny.PROMPT, "a white rook")
    want_prompt, want_answer = tiny.ids(processor, prompt), tiny.ids(processor, ANSWER)
    assert ex["input_ids"] == want_prompt + want_answer
    assert ex["labels"] == [IGNORE] * len(want_prompt) + want_answer


def test_idefics_image_attention_mask_covers_the_answer():
    spec, (model, processor) = REGISTRY["idefics"], tiny.idefics()
    ex = PromptAnswerTokenizer(processor, spec, 128).encode(tiny.picture(), tiny.PROMPT, "a white rook")
    # <s> and the opening <fake> come before the picture; from <image> on, every token (answer too) sees it.
    assert ex["image_attention_mask"][0, :, 0].tolist() == [0, 0] + [1] * (len(ex["input_ids"]) - 2)


def test_collated_batch_pads_and_gives_each_sample_its_own_logits(family):
    spec, model, processor = family
    a, b = tiny.training_examples(PromptAnswerTokenizer(processor, spec, 256))
    batch = Collator(processor.tokenizer.pad_token_id, spec.seq_keys)([a, b])
    n, longest = len(a["input_ids"]), batch["input_ids"].shape[1]
    assert batch["labels"][0].tolist() == a["labels"] + [IGNORE] * (longest - n)
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (longest - n)
    # Ragged sub-image counts/sizes are zero-padded; the model must drop those pictures/pixels.
    single = [tiny.answer_logits(model, Collator(processor.tokenizer.pad_token_id, spec.seq_keys)([e])) for e in (a, b)]
    for got, want in zip(tiny.answer_logits(model, batch), single):
        torch.testing.assert_close(got, want[0], rtol=1e-4, atol=1e-4)


def test_sub_image_counts_differ_and_padding_pictures_are_zero():
    spec, (model, processor) = REGISTRY["idefics3"], tiny.idefics3()
    a, b = tiny.training_examples(PromptAnswerTokenizer(processor, spec, 256))
    assert a["pixel_values"].shape[1] == 5 and b["pixel_values"].shape[1] == 3  # 2x2 + whole, 2x1 + whole
    pixels = Collator(processor.tokenizer.pad_token_id)([a, b])["pixel_values"]
    assert pixels.shape[:2] == (2, 5) and pixels[1, 3:].abs().sum() == 0


@pytest.mark.parametrize("name", FAMILIES)
def test_two_lora_steps_train_only_intended_parts_with_gradient_checkpointing(tmp_path, name):
    model, processor = tiny.FAMILIES[name](0)
    moved = tiny.moved_parameters(REGISTRY[name], model, processor, tmp_path, "lm+vision+projector")
    assert moved["frozen_moved"] == []
    assert moved["lora_b_zero"] == []  # every adapter, vision ones too, got a gradient
    assert any("vision_model" in n for n in moved["lora_b"])
    assert moved["whole"] and moved["whole_still"] == []
    parts = ("perceiver_resampler", "gated_cross_attn_layers") if name == "idefics" else ("connector",)
    assert all(any(p in n for p in parts) for n in moved["whole"])
    if name == "idefics":  # the cross-attention layers train whole, their tanh gates included
        assert any("gated_cross_attn_layers" in n and "alpha_cross_attn" in n for n in moved["whole"])


def test_idefics_lm_lora_reaches_the_gated_cross_attention_layers():
    spec, (model, _) = REGISTRY["idefics"], tiny.idefics()
    peft_model = apply_plan(model, spec, load_config(overrides=["train.lora.targets=lm"]).train.lora)
    trainable = {n.split(".lora_")[0] for n, p in peft_model.named_parameters() if p.requires_grad}
    # 2 LM layers + 2 gated cross-attention layers, 7 linears each; nothing in vision or the perceiver
    assert len(trainable) == 4 * 7
    assert {n.split(".")[3] for n in trainable} == {"layers", "gated_cross_attn_layers"}


def test_left_padded_generation_batch_matches_single_prompts(family):
    spec, model, processor = family
    encoder = PromptAnswerTokenizer(processor, spec)
    pictures, prompts = [tiny.picture((40, 30)), tiny.picture((30, 60), (9, 99, 199))], [tiny.PROMPT, "What?"]
    batch = encoder.encode_prompts(pictures, prompts)
    assert batch["attention_mask"][:, 0].tolist() == [1, 0] and batch["attention_mask"][:, -1].tolist() == [1, 1]
    alone = torch.cat([tiny.next_token_logits(model, encoder.encode_prompts([p], [q])) for p, q in zip(pictures, prompts)])
    torch.testing.assert_close(tiny.next_token_logits(model, batch), alone, rtol=1e-4, atol=1e-4)
    answers = generate_answers(model, processor, spec, pictures, prompts, EvalConfig(max_new_tokens=3, batch_size=2))
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_training_forward_sees_the_answer_as_generation_did(family):
    spec, model, processor = family
    generation, training = tiny.training_view_of_generation(model, processor, spec, [FAKE, IMG, "<global-img>"])
    torch.testing.assert_close(training, generation, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", FAMILIES)
def test_adapter_round_trip_gives_identical_logits(tmp_path, name):
    from vlmtune.models.loading import load_for_inference

    spec = REGISTRY[name]
    base_dir = tiny.save(name, tmp_path / "base")
    reloaded_base, processor, _ = load_for_inference(base_dir, device=CPU)  # the row's own processor loading
    peft_model = apply_plan(reloaded_base, spec, load_config(overrides=["train.lora.targets=lm+vision+projector"]).train.lora)
    tiny.perturb_trainable(peft_model)
    peft_model.save_pretrained(tmp_path / "adapter")
    batch = Collator(processor.tokenizer.pad_token_id, spec.seq_keys)(tiny.training_examples(PromptAnswerTokenizer(processor, spec, 256)))
    batch.pop("labels")
    reloaded, _, got_spec = load_for_inference(tmp_path / "adapter", device=CPU)
    assert got_spec is spec
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, peft_model.eval()(**batch).logits, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["idefics", "idefics3"])
def test_max_length_that_cuts_image_tokens_is_refused(name):
    _, processor = tiny.FAMILIES[name](0)
    with pytest.raises(VlmtuneError, match="would cut image tokens"):
        PromptAnswerTokenizer(processor, REGISTRY[name], max_length=8).encode(tiny.picture(), tiny.PROMPT, "a white rook", where="row 3")


def test_idefics_answer_cut_by_max_length_keeps_the_mask_aligned():
    spec, (_, processor) = REGISTRY["idefics"], tiny.idefics()
    prompt_len = len(PROMPTS["idefics"][1])
    ex = PromptAnswerTokenizer(processor, spec, max_length=prompt_len + 2).encode(tiny.picture(), tiny.PROMPT, "a white rook")
    assert ex["truncated"] and len(ex["input_ids"]) == prompt_len + 2
    assert ex["image_attention_mask"].shape[1] == prompt_len + 2


@pytest.mark.parametrize("name", FAMILIES)
def test_vlmtune_train_runs_end_to_end(tmp_path, name):
    import json

    from vlmtune.models.loading import load_for_inference

    run = tiny.train_run_on(name, tmp_path)
    info = json.loads((run / "vlmtune_run.json").read_text())
    assert info["status"] == "done" and info["family"] == name and (run / "adapter/adapter_config.json").is_file()
    assert load_for_inference(run)[2] is REGISTRY[name]
