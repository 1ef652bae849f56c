"""Qwen3-VL quirks (M-RoPE token types, DeepStack mergers) on the tiny model, and the real 4B/8B module trees.

Labels, padding, generation, LoRA and reload checks for this row: tests/unit/test_families.py.
"""

import pytest
import torch

import families_tiny_e as fe
import family_cases as fcs
from vlmtune.models.families.qwen3_vl import QWEN3_VL
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.models.registry import matching_modules
from vlmtune.training.collate import Collator

PAD = "<|image_pad|>"


def test_mm_token_type_ids_mark_the_image_tokens_and_m_rope_positions_follow_the_grid():
    model, processor = fe.qwen3_vl()
    case = fcs.case("qwen3_vl")
    ex = PromptAnswerTokenizer(processor, QWEN3_VL, 128).encode(case.picture(), fcs.PROMPT, fcs.ANSWER)
    assert ex["mm_token_type_ids"].tolist() == [[int(t == PAD) for t in case.prompt + case.answer]]
    assert ex["image_grid_thw"].tolist() == [[1, 4, 4]] and ex["pixel_values"].shape == (16, 3 * 2 * 14 * 14)
    batch = Collator(processor.tokenizer.pad_token_id, QWEN3_VL.seq_keys)([ex])
    positions, _ = model.model.get_rope_index(batch["input_ids"], batch["mm_token_type_ids"], batch["image_grid_thw"],
                                              attention_mask=batch["attention_mask"])
    start = case.prompt.index(PAD)  # the 2x2 grid: temporal, height, width; the text after it resumes at start + 2
    assert positions[:, 0, start:start + 5].tolist() == [[start] * 4 + [start + 2], [start, start, start + 1, start + 1,
                                                         start + 2], [start, start + 1, start, start + 1, start + 2]]


def test_deepstack_features_reach_the_language_model():
    """The DeepStack mergers feed the LM's first layers: they are part of the projector the row trains."""
    model, processor = fe.qwen3_vl()
    case = fcs.case("qwen3_vl")
    batch = fcs.inputs_of(fcs.collate(processor, QWEN3_VL, [
        PromptAnswerTokenizer(processor, QWEN3_VL, 128).encode(case.picture(), fcs.PROMPT, fcs.ANSWER)]))
    with torch.no_grad():
        before = model(**batch).logits
        model.model.visual.deepstack_merger_list[0].linear_fc2.weight.mul_(2)
        after = model(**batch).logits
    assert (after - before).abs().max() > 1e-3
    assert QWEN3_VL.projector_modules == ("model.visual.merger", "model.visual.deepstack_merger_list")


# ---------------------------------------------------------------- the real module trees (meta device)
@pytest.mark.parametrize("folder,deepstack", [("Qwen__Qwen3-VL-4B-Instruct", [5, 11, 17]), ("Qwen__Qwen3-VL-8B-Instruct", [8, 16, 24])])
def test_real_deepstack_mergers_train_whole_and_get_no_lora(folder, deepstack):
    """Size and LoRA counts: tests/unit/test_families.py."""
    config, model = fcs.meta_model(folder)
    assert config.vision_config.deepstack_visual_indexes == deepstack
    assert len(model.get_submodule("model.visual.deepstack_merger_list")) == len(deepstack)
    whole = fcs.linears_under(model, "model.visual.merger") | fcs.linears_under(model, "model.visual.deepstack_merger_list")
    assert len(whole) == 2 * (1 + len(deepstack)) and not whole & set(matching_modules(model, QWEN3_VL.vision_pattern()))
