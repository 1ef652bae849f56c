"""Real module trees (published configs built on the meta device): LoRA regexes hit exactly the intended layers.

Configs are copies from shared/model-configs (see its SOURCES.md: the llava-1.5-7b, Qwen2.5-VL-7B
and paligemma-3b configs are exact, the others rebuilt from published values).
"""

import pytest
import torch
import transformers
from transformers import AutoConfig

from families_tiny import DATA
from vlmtune.config import load_config
from vlmtune.models.lora import plan_for
from vlmtune.models.registry import family_for, matching_modules

# checkpoint -> (family, LM decoder layers, vision layers, LoRA-able linears per vision layer)
REAL = {
    "llava-hf__llava-1.5-7b-hf": ("llava", 32, 24, 6),  # CLIP-L/336: q/k/v/out_proj, fc1, fc2
    "llava-hf__llava-1.5-13b-hf": ("llava", 40, 24, 6),
    "llava-hf__llava-v1.6-mistral-7b-hf": ("llava_next", 32, 24, 6),
    "llava-hf__llava-v1.6-vicuna-7b-hf": ("llava_next", 32, 24, 6),
    "llava-hf__llava-v1.6-34b-hf": ("llava_next", 60, 24, 6),
    "Qwen__Qwen2-VL-2B-Instruct": ("qwen2_vl", 28, 32, 4),  # qkv, proj, fc1, fc2
    "Qwen__Qwen2-VL-7B-Instruct": ("qwen2_vl", 28, 32, 4),
    "Qwen__Qwen2.5-VL-7B-Instruct": ("qwen2_5_vl", 28, 32, 5),  # qkv, proj, gate/up/down_proj
    "google__paligemma-3b-pt-224": ("paligemma", 18, 27, 6),  # SigLIP-so400m
}
# Where each family keeps its decoder layers and vision layers in transformers' module tree.
LAYERS = {"llava": ("model.language_model.layers.", "model.vision_tower.encoder.layers."),
          "qwen2_vl": ("model.language_model.layers.", "model.visual.blocks."),
          "paligemma": ("model.language_model.layers.", "model.vision_tower.encoder.layers.")}
LAYERS.update(llava_next=LAYERS["llava"], qwen2_5_vl=LAYERS["qwen2_vl"])


@pytest.fixture(scope="module", params=sorted(REAL))
def real(request):
    config = AutoConfig.from_pretrained(DATA / request.param)
    spec = family_for(config.model_type)
    with torch.device("meta"):
        model = getattr(transformers, spec.model_class)(config)
    return request.param, spec, model


def linears_under(model, prefix: str) -> set[str]:
    return {n for n, m in model.named_modules() if n.startswith(prefix) and isinstance(m, torch.nn.Linear)}


def test_family_is_read_from_model_type(real):
    name, spec, _ = real
    assert spec.name == REAL[name][0]


def test_lm_and_vision_patterns_match_exactly_their_layers_linears(real):
    name, spec, model = real
    _, lm_layers, vision_layers, per_vision_layer = REAL[name]
    lm_prefix, vision_prefix = LAYERS[spec.name]
    lm, vision = set(matching_modules(model, spec.lm_pattern())), set(matching_modules(model, spec.vision_pattern()))
    assert len(lm) == lm_layers * 7 and lm == linears_under(model, lm_prefix)
    assert len(vision) == vision_layers * per_vision_layer and vision == linears_under(model, vision_prefix)


def test_combined_plan_matches_nothing_else_and_projector_is_trained_whole(real):
    name, spec, model = real
    plan = plan_for(spec, load_config(overrides=["train.lora.targets=lm+vision+projector"]).train.lora)
    matched = set(matching_modules(model, plan.lora_pattern))
    lm_prefix, vision_prefix = LAYERS[spec.name]
    assert matched == linears_under(model, lm_prefix) | linears_under(model, vision_prefix)
    projector = {n for p in spec.projector_modules for n in linears_under(model, p)}
    assert projector and not projector & matched  # merger / projector: whole, never LoRA
    assert not any(n.endswith(("lm_head", "patch_embed.proj", "patch_embedding")) for n in matched)
    for path in plan.whole:  # modules_to_save are matched by leaf name: each must be unique in the tree
        leaf = path.split(".")[-1]
        owners = [n for n, _ in model.named_modules() if n.split(".")[-1] == leaf] or \
                 [n for n, _ in model.named_parameters() if n.split(".")[-1] == leaf]
        assert owners == [path]
