"""The Mllama (Llama-3.2-Vision) row on a tiny random model with the real processor class.

Token ids are spelled out by hand from the fixed vocabulary of tests/families_tiny_b.py.
"""

from dataclasses import replace

import pytest
import torch

import families_tiny_b as tiny
from vlmtune.config import EvalConfig, load_config
from vlmtune.training.collate import Collator
from vlmtune.models.prompting import IGNORE, PromptAnswerTokenizer
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation.generate import generate_answers, generation_kwargs
from vlmtune.models.lora import apply_plan
from vlmtune.models.registry import MLLAMA, family_for

HEADER = ["<|start_header_id|>", "user", "<|end_header_id|>"]
PROMPT = ["<|begin_of_text|>", *HEADER, "<|image|>", "describe", "this", "picture", ".", "<|eot_id|>",
          "<|start_header_id|>", "assistant", "<|end_header_id|>"]
ANSWER = ["a", "white", "rook", "<|eot_id|>"]
IMAGE_AT = 4
CPU = torch.device("cpu")  # fp32 and the same device as the test batches, also where a GPU is present


@pytest.fixture(scope="module")
def built():
    return tiny.mllama()


def test_row_is_chosen_by_model_type(built):
    assert family_for(built[0].config.model_type) is MLLAMA


def test_one_bos_prompt_and_image_masked_answer_and_eot_kept(built):
    _, processor = built
    ex = PromptAnswerTokenizer(processor, MLLAMA, 64).encode(tiny.picture(), tiny.PROMPT, "a white rook")
    assert ex["input_ids"] == tiny.ids(processor, PROMPT + ANSWER)
    assert ex["labels"] == [IGNORE] * len(PROMPT) + tiny.ids(processor, ANSWER)
    # The tokenizer adds BOS like Llama-3's and the template writes one: without the row's
    # add_special_tokens=False the prompt would start with two.
    doubled = PromptAnswerTokenizer(processor, replace(MLLAMA, processor_kwargs=()), 64).encode(tiny.picture(), tiny.PROMPT, "a")
    assert doubled["input_ids"][:2] == tiny.ids(processor, ["<|begin_of_text|>"] * 2)


def test_cross_attention_mask_covers_the_answer(built):
    _, processor = built
    wide = PromptAnswerTokenizer(processor, MLLAMA, 64).encode(tiny.picture((40, 30)), tiny.PROMPT, "a white rook")
    square = PromptAnswerTokenizer(processor, MLLAMA, 64).encode(tiny.picture((28, 28)), tiny.PROMPT, "a white rook")
    n = len(wide["input_ids"])
    assert wide["cross_attention_mask"].shape == (1, n, 1, tiny.MLLAMA_TILES)
    # From <|image|> on, every token (the answer too) attends to the picture's tiles: 2 for a wide one, 1 for a square one.
    assert wide["cross_attention_mask"][0, :, 0].tolist() == [[0, 0]] * IMAGE_AT + [[1, 1]] * (n - IMAGE_AT)
    assert square["cross_attention_mask"][0, :, 0].tolist() == [[0, 0]] * IMAGE_AT + [[1, 0]] * (n - IMAGE_AT)


def test_collated_batch_pads_masks_and_gives_each_sample_its_own_logits(built):
    model, processor = built
    a, b = tiny.training_examples(PromptAnswerTokenizer(processor, MLLAMA, 64))
    batch = Collator(processor.tokenizer.pad_token_id, MLLAMA.seq_keys)([a, b])
    n, longest = len(a["input_ids"]), batch["input_ids"].shape[1]
    assert batch["labels"][0].tolist() == a["labels"] + [IGNORE] * (longest - n)
    assert batch["cross_attention_mask"].shape[:2] == (2, longest)
    assert batch["cross_attention_mask"][0, n:].abs().sum() == 0  # padding attends to no picture
    single = [tiny.answer_logits(model, Collator(processor.tokenizer.pad_token_id, MLLAMA.seq_keys)([e])) for e in (a, b)]
    for got, want in zip(tiny.answer_logits(model, batch), single):
        torch.testing.assert_close(got, want[0], rtol=1e-4, atol=1e-4)


def test_two_lora_steps_train_only_intended_parts_with_gradient_checkpointing(tmp_path):
    model, processor = tiny.mllama()
    moved = tiny.moved_parameters(MLLAMA, model, processor, tmp_path, "lm+vision+projector")
    assert moved["frozen_moved"] == []  # the cross-attention gates included
    assert moved["lora_b_zero"] == []  # every adapter, vision and cross-attention ones too, got a gradient
    assert any("vision_model" in n for n in moved["lora_b"]) and any("cross_attn" in n for n in moved["lora_b"])
    assert moved["whole"] and moved["whole_still"] == []
    assert all("multi_modal_projector" in n for n in moved["whole"])


def test_lm_lora_covers_self_and_cross_attention_layers_only():
    model, _ = tiny.mllama()
    peft_model = apply_plan(model, MLLAMA, load_config(overrides=["train.lora.targets=lm+vision"]).train.lora)
    adapted = {n.split(".lora_")[0].removeprefix("base_model.model.") for n, p in peft_model.named_parameters()
               if p.requires_grad}
    lm = [n for n in adapted if n.startswith("model.language_model.")]
    vision = [n for n in adapted if n.startswith("model.vision_model.")]
    # 2 self-attention + 1 cross-attention layers x 7 linears; 2 local + 1 global vision layers x 6
    assert len(lm) == 3 * 7 and sum(".cross_attn." in n for n in lm) == 4
    assert len(vision) == 3 * 6 and len(adapted) == len(lm) + len(vision)


def test_left_padded_generation_matches_single_prompts_and_stops_on_eot(built):
    model, processor = built
    encoder = PromptAnswerTokenizer(processor, MLLAMA)
    pictures, prompts = [tiny.picture((40, 30)), tiny.picture((28, 28), (9, 99, 199))], [tiny.PROMPT, "What?"]
    batch = encoder.encode_prompts(pictures, prompts)
    assert batch["attention_mask"][:, 0].tolist() == [1, 0] and batch["input_ids"][0, 0] == batch["input_ids"][1, 2]
    alone = torch.cat([tiny.next_token_logits(model, encoder.encode_prompts([p], [q])) for p, q in zip(pictures, prompts)])
    torch.testing.assert_close(tiny.next_token_logits(model, batch), alone, rtol=1e-4, atol=1e-4)
    stops = generation_kwargs(EvalConfig(), encoder)["eos_token_id"]
    assert set(tiny.ids(processor, ["<|eot_id|>", "<|end_of_text|>"])) <= set(stops)
    answers = generate_answers(model, processor, MLLAMA, pictures, prompts, EvalConfig(max_new_tokens=3, batch_size=2))
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_training_forward_sees_the_answer_as_generation_did(built):
    model, processor = built
    generation, training = tiny.training_view_of_generation(model, processor, MLLAMA, [])  # <|image|> is past the LM head
    torch.testing.assert_close(training, generation, rtol=1e-4, atol=1e-4)


def test_adapter_round_trip_gives_identical_logits(tmp_path):
    from vlmtune.models.loading import load_for_inference

    base, processor, _ = load_for_inference(tiny.save("mllama", tmp_path / "base"), device=CPU)
    peft_model = apply_plan(base, MLLAMA, load_config(overrides=["train.lora.targets=lm+vision+projector"]).train.lora)
    tiny.perturb_trainable(peft_model)
    peft_model.save_pretrained(tmp_path / "adapter")
    batch = Collator(processor.tokenizer.pad_token_id, MLLAMA.seq_keys)(tiny.training_examples(PromptAnswerTokenizer(processor, MLLAMA, 64)))
    batch.pop("labels")
    reloaded, _, spec = load_for_inference(tmp_path / "adapter", device=CPU)
    assert spec is MLLAMA
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, peft_model.eval()(**batch).logits, rtol=0, atol=0)


def test_max_length_that_cuts_the_prompt_is_refused_and_a_cut_answer_keeps_the_mask_aligned(built):
    _, processor = built
    with pytest.raises(VlmtuneError, match="raise data.max_length to at least 17"):
        PromptAnswerTokenizer(processor, MLLAMA, max_length=10).encode(tiny.picture(), tiny.PROMPT, "a white rook", where="row 3")
    ex = PromptAnswerTokenizer(processor, MLLAMA, max_length=len(PROMPT) + 2).encode(tiny.picture(), tiny.PROMPT, "a white rook")
    assert ex["truncated"] and ex["cross_attention_mask"].shape[1] == len(ex["input_ids"]) == len(PROMPT) + 2


def test_vlmtune_train_runs_end_to_end(tmp_path):
    import json

    from vlmtune.models.loading import load_for_inference

    run = tiny.train_run_on("mllama", tmp_path)
    info = json.loads((run / "vlmtune_run.json").read_text())
    assert info["status"] == "done" and info["family"] == "mllama" and (run / "adapter/adapter_config.json").is_file()
    assert load_for_inference(run)[2] is MLLAMA
