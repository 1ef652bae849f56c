"""QLoRA keeps the vision tower, the projector and the LM head unquantized, for every family's real shape.

Checked with transformers' own matching (``should_convert_module``, fed the list its bnb
quantizer builds from ours), on each published config in tests/data/model-configs built on the
meta device: no bitsandbytes needed.
"""

import re

import pytest
import torch
import transformers
from torch import nn
from transformers import AutoConfig
from transformers.quantizers.base import HfQuantizer
from transformers.quantizers.quantizers_utils import should_convert_module

from families_tiny import DATA
from vlmtune.config import load_config
from vlmtune.errors import VlmtuneError
from vlmtune.models.dtype import quantized_under, unquantized_prefixes
from vlmtune.models.registry import ROWS, family_for


@pytest.fixture(scope="module", params=sorted(p.parent.name for p in DATA.glob("*/config.json")))
def real(request):
    config = AutoConfig.from_pretrained(DATA / request.param)
    spec = family_for(config.model_type)
    with torch.device("meta"):
        model = getattr(transformers, spec.model_class)(config)
    return spec, model


def under(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_only_lm_decoder_linears_are_quantized(real):
    spec, model = real
    keep = unquantized_prefixes(spec)
    # What the bnb quantizer hands replace_with_bnb_linear (quantizer_bnb_4bit, before weight loading).
    skip = HfQuantizer.get_modules_to_not_convert(model, keep, model._keep_in_fp32_modules)
    lm = re.compile(rf"{spec.lm_prefix}\..*")
    linears = [n for n, m in model.named_modules() if type(m) is nn.Linear]  # what replace_with_bnb_linear converts
    converted = {n for n in linears if should_convert_module(n, skip)}
    expected = {n for n in linears if lm.fullmatch(n) and not under(n, keep)}
    assert converted == expected
    kept = [n for n in linears if under(n, keep)]
    assert any(n.startswith(keep[0] + ".") for n in kept)  # the vision tower's linears (projector: in the equality)
    # the decoder's: 7 per Llama-style layer, 5 per LFM2 short-convolution layer (in/out_proj + w1-3)
    assert len(converted) >= 5 * model.config.get_text_config().num_hidden_layers


def test_bare_leaf_names_match_nothing_below_the_top_level():
    """What load_model passed before: transformers quantized the vision tower and the projector anyway."""
    bare = ["vision_tower", "multi_modal_projector", "lm_head"]
    assert should_convert_module("model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj", bare)
    assert should_convert_module("model.multi_modal_projector.linear_1", bare)
    assert not should_convert_module("model.multi_modal_projector.linear_1", unquantized_prefixes(family_for("llava")))


def test_every_row_names_plain_prefixes():
    for spec in ROWS:
        keep = unquantized_prefixes(spec)
        assert keep[-1] == "lm_head" and all(re.fullmatch(r"[\w.]+", p) for p in keep), (spec.name, keep)


class Linear4bit(nn.Linear):  # stand-ins named like bitsandbytes' classes
    pass


class LinearNF4(Linear4bit):
    pass


class Linear8bitLt(nn.Linear):
    pass


def test_post_load_check_finds_quantized_linears_by_class_name():
    model = nn.Module()
    model.model = nn.Module()
    model.model.vision_tower = nn.Sequential(nn.Linear(2, 2), LinearNF4(2, 2))
    model.model.vision_tower_extra = nn.Sequential(Linear4bit(2, 2))  # a sibling whose name only starts alike
    model.model.multi_modal_projector = nn.Sequential(Linear8bitLt(2, 2))
    model.model.language_model = nn.Sequential(Linear4bit(2, 2))
    model.lm_head = nn.Linear(2, 2)
    keep = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]
    assert quantized_under(model, keep) == ["model.vision_tower.1", "model.multi_modal_projector.0"]
    model.model.vision_tower[1] = nn.Linear(2, 2)
    model.model.multi_modal_projector[0] = nn.Linear(2, 2)
    assert quantized_under(model, keep) == []


@pytest.mark.parametrize("targets", ["full", "projector"])
def test_quantization_without_lora_targets_is_refused_in_one_line(targets):
    with pytest.raises(VlmtuneError, match=r"model.quantization='4bit' is invalid: QLoRA trains LoRA adapters") as err:
        load_config(overrides=["model.quantization=4bit", f"train.lora.targets={targets}"])
    assert "\n" not in str(err.value)
    load_config(overrides=["model.quantization=4bit", "train.lora.targets=lm+projector"])  # fine


@pytest.fixture()
def fake_4bit(monkeypatch):
    """load_model with bitsandbytes stood in for: the quantization config is recorded, and
    ``leak`` turns one vision linear into a Linear4bit, as the old bare-name skip list did."""
    import vlmtune.models.loading as loading

    seen, real = {}, transformers.LlavaForConditionalGeneration

    class Quantized:
        leak = False

        @classmethod
        def from_pretrained(cls, path, quantization_config, dtype, **kwargs):
            seen["config"] = quantization_config
            model = real.from_pretrained(path, dtype=dtype)
            if cls.leak:
                model.set_submodule("model.vision_tower.encoder.layer.0.mlp.fc1", Linear4bit(32, 64))
            return model

    monkeypatch.setattr(loading, "quantization_config", lambda mode, device, keep: ("bnb", mode, tuple(keep)))
    # By name: transformers' lazy module object in sys.modules can differ from the one imported above.
    monkeypatch.setattr("transformers.LlavaForConditionalGeneration", Quantized)
    return Quantized, seen


def test_qlora_load_keeps_frozen_weights_bf16_and_passes_full_prefixes(fake_4bit, tiny_model_dir):
    from vlmtune.config import ModelConfig
    from vlmtune.models.loading import load_model

    _, seen = fake_4bit
    model, *_ = load_model(ModelConfig(name=str(tiny_model_dir), dtype="bf16", quantization="4bit"), training=True)
    assert seen["config"] == ("bnb", "4bit", ("model.vision_tower", "model.multi_modal_projector", "lm_head"))
    # prepare_model_for_kbit_training would have upcast all of these to fp32 (and computed in fp32).
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_qlora_load_refuses_a_quantized_vision_tower(fake_4bit, tiny_model_dir):
    from vlmtune.config import ModelConfig
    from vlmtune.models.loading import load_model

    fake_4bit[0].leak = True
    with pytest.raises(VlmtuneError, match="1 modules meant to stay unquantized were quantized "
                                           r"\(first: model.vision_tower.encoder.layer.0.mlp.fc1\)"):
        load_model(ModelConfig(name=str(tiny_model_dir), dtype="bf16", quantization="4bit"), training=True)
