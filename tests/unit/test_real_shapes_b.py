"""LoRA target regexes against the real module trees of IDEFICS-9B, Idefics2-8B, Idefics3-8B, SmolVLM-256M
and Llama-3.2-11B-Vision, built on the meta device from their config.json (tests/data/model-configs;
most are reconstructed from published values, see /work/shared/model-configs/SOURCES.md).

Vision towers, perceivers and LMs share leaf names (q_proj, gate_proj...): each part's count is exact,
and the parts add up to every module matched.
"""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from vlmtune.config import load_config
from vlmtune.models.lora import plan_for
from vlmtune.models.registry import REGISTRY, family_for, matching_modules

CONFIGS = Path(__file__).parent.parent / "data" / "model-configs"
SMOLVLM_256M = "HuggingFaceTB__SmolVLM-256M-Instruct"

# checkpoint -> (row, {module path prefix: LoRA targets under it}, modules trained whole with "projector")
EXPECTED = {
    "HuggingFaceM4__idefics-9b-instruct": ("idefics", {
        "model.layers.": 32 * 7,  # LLaMA-7B: q/k/v/o + gate/up/down
        # One per 4 LM layers (cross_attn q/k/v/o + MLP): trained whole with "projector", so no LoRA
        # here; with "lm" alone they get 32 // 4 * 7 adapters (test_family_idefics.py).
        "model.gated_cross_attn_layers.": 0,
        "model.vision_model.": 32 * 6,  # CLIP-H: q/k/v/out_proj + fc1/fc2
    }, ["model.perceiver_resampler", "model.gated_cross_attn_layers"]),
    "HuggingFaceM4__idefics2-8b": ("idefics2", {
        "model.text_model.": 32 * 7,  # Mistral-7B
        "model.vision_model.": 27 * 6,  # SigLIP-so400m
    }, ["model.connector"]),
    "HuggingFaceM4__Idefics3-8B-Llama3": ("idefics3", {
        "model.text_model.": 32 * 7,  # Llama-3.1-8B
        "model.vision_model.": 27 * 6,
    }, ["model.connector"]),
    SMOLVLM_256M: ("idefics3", {  # the first SmolVLMs are model_type idefics3
        "model.text_model.": 30 * 7,  # SmolLM2-135M
        "model.vision_model.": 12 * 6,  # SigLIP-base
    }, ["model.connector"]),
    "meta-llama__Llama-3.2-11B-Vision-Instruct": ("mllama", {
        "model.language_model.": 40 * 7,  # 32 self-attention + 8 cross-attention layers, 7 linears each
        "model.vision_model.transformer.": 32 * 6,  # q/k/v/o_proj + fc1/fc2
        "model.vision_model.global_transformer.": 8 * 6,
    }, ["model.multi_modal_projector"]),
}


def meta_model(config):
    import transformers

    with torch.device("meta"):
        return getattr(transformers, family_for(config.model_type).model_class)(config)


def real_config(name: str):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(CONFIGS / name)


def smolvlm_config():
    """SmolVLM-256M's shapes as model_type smolvlm (SmolVLM2-256M's layout; no smolvlm config.json is at hand)."""
    from transformers import SmolVLMConfig

    raw = json.loads((CONFIGS / SMOLVLM_256M / "config.json").read_text())
    return SmolVLMConfig(**{k: v for k, v in raw.items() if k not in ("model_type", "architectures")})


def check_targets(model, spec, parts: dict[str, int], whole: list[str]) -> None:
    plan = plan_for(spec, load_config(overrides=["train.lora.targets=lm+vision+projector"]).train.lora)
    matched = matching_modules(model, plan.lora_pattern)
    assert all(isinstance(model.get_submodule(n), nn.Linear) for n in matched)
    counts = {prefix: sum(n.startswith(prefix) for n in matched) for prefix in parts}
    assert counts == parts and sum(counts.values()) == len(matched)  # nothing else matched
    assert list(plan.whole) == whole
    for path in whole:  # trained whole, so no LoRA inside (its perceiver/MLP reuse the LM's leaf names)
        assert model.get_submodule(path) is not None and not any(n.startswith(path + ".") for n in matched)


@pytest.mark.parametrize("name", EXPECTED)
def test_lora_targets_on_the_real_module_tree(name):
    row, parts, whole = EXPECTED[name]
    config = real_config(name)
    spec = family_for(config.model_type)
    assert spec is REGISTRY[row]
    check_targets(meta_model(config), spec, parts, whole)


def test_lm_and_vision_patterns_each_stay_in_their_part():
    model, spec = meta_model(real_config("HuggingFaceM4__idefics2-8b")), REGISTRY["idefics2"]
    assert all(n.startswith("model.text_model.") for n in matching_modules(model, spec.lm_pattern()))
    assert all(n.startswith("model.vision_model.") for n in matching_modules(model, spec.vision_pattern()))


def test_smolvlm_row_on_smolvlm_256m_shapes():
    config = smolvlm_config()
    assert family_for(config.model_type) is REGISTRY["smolvlm"]
    check_targets(meta_model(config), REGISTRY["smolvlm"], EXPECTED[SMOLVLM_256M][1], ["model.connector"])


def test_mllama_lm_targets_include_the_eight_cross_attention_layers():
    config = real_config("meta-llama__Llama-3.2-11B-Vision-Instruct")
    matched = matching_modules(meta_model(config), REGISTRY["mllama"].lm_pattern())
    cross = {int(n.split(".")[3]) for n in matched if ".cross_attn." in n}
    assert sorted(cross) == config.text_config.cross_attention_layers == [3, 8, 13, 18, 23, 28, 33, 38]
    assert sum(".cross_attn." in n for n in matched) == 8 * 4  # q/k/v/o_proj; their MLPs count as LM MLPs
