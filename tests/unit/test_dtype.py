import pytest
import torch

import tiny
from vlmtune.config import ModelConfig
from vlmtune.errors import VlmtuneError
from vlmtune.models.dtype import (attention_kernel, autocast_bf16, cpu_has_bf16, dtype_audit, keep_fp32_masters,
                                  quantization_config, weights_dtype)
from vlmtune.models.loading import load_model

CPU = torch.device("cpu")


def test_fp16_training_is_refused_and_cpu_keeps_fp32_master_weights():
    with pytest.raises(VlmtuneError, match="fp16 is refused for training"):
        weights_dtype("fp16", CPU, training=True)
    assert weights_dtype("fp16", CPU, training=False) == torch.float16  # inference only
    assert weights_dtype("auto", CPU, training=True) == torch.float32
    assert weights_dtype("bf16", CPU, training=True) == torch.bfloat16


def test_quantization_needs_cuda():
    assert quantization_config("none", CPU, []) is None
    with pytest.raises(VlmtuneError, match="model.quantization=4bit needs a CUDA GPU"):
        quantization_config("4bit", CPU, [])


def test_attention_auto_is_sdpa_on_cpu():
    assert attention_kernel("auto", CPU) == "sdpa"
    assert attention_kernel("eager", CPU) == "eager"


def test_auto_attention_never_picks_flash_for_models_that_refuse_it(monkeypatch):
    import importlib.util

    from transformers import Gemma3ForConditionalGeneration, LlavaForConditionalGeneration

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "flash_attn" else real(name, *a))
    cuda = torch.device("cuda", 0)
    assert attention_kernel("auto", cuda, LlavaForConditionalGeneration) == "flash_attention_2"
    assert attention_kernel("auto", cuda, Gemma3ForConditionalGeneration) == "sdpa"
    with pytest.raises(VlmtuneError, match="does not support it"):
        attention_kernel("flash_attention_2", cuda, Gemma3ForConditionalGeneration)


def test_audit_names_modules_left_in_another_dtype():
    model, _ = tiny.llava()
    model.to(torch.bfloat16)
    model.model.multi_modal_projector.linear_1.to(torch.float32)
    assert dtype_audit(model, torch.bfloat16) == ["model.multi_modal_projector.linear_1 (float32)"]


def test_bf16_load_leaves_nothing_behind(tiny_model_dir):
    model, _, spec, dtype = load_model(ModelConfig(name=str(tiny_model_dir), dtype="bf16"), training=True)
    assert dtype == torch.bfloat16 and spec.name == "llava"
    assert dtype_audit(model, torch.bfloat16) == []


def test_bf16_weights_train_under_autocast_unless_switched_off():
    """The fp32 masters of bf16 weights need autocast to keep their matmuls in bf16."""
    assert autocast_bf16("auto", CPU, torch.bfloat16) and autocast_bf16("true", CPU, torch.bfloat16)
    assert not autocast_bf16("false", CPU, torch.bfloat16)
    assert autocast_bf16("auto", CPU, torch.float32) == cpu_has_bf16()


def test_masters_are_the_trainable_non_lora_weights_only():
    from vlmtune.config import load_config
    from vlmtune.models.lora import apply_plan
    from vlmtune.models.registry import LLAVA

    model, _ = tiny.llava()
    lora = load_config(overrides=["train.lora.targets=lm+projector"]).train.lora
    model = apply_plan(model.to(torch.bfloat16), LLAVA, lora)
    names = keep_fp32_masters(model, torch.bfloat16)
    copy = "base_model.model.model.multi_modal_projector.modules_to_save.default"
    assert names == sorted(f"{copy}.{leaf}.{kind}" for leaf in ("linear_1", "linear_2") for kind in ("weight", "bias"))
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert all(dtypes[n] == torch.float32 for n in names)
    assert all(d == torch.float32 for n, d in dtypes.items() if "lora_" in n)  # PEFT's own upcast
    frozen = {d for n, p in model.named_parameters() if not p.requires_grad for d in [p.dtype]}
    assert frozen == {torch.bfloat16}  # frozen weights stay as loaded (no fp32 copy of the vision tower or LM)
    projector = model.get_submodule(copy)
    out = projector(torch.randn(2, 32, dtype=torch.bfloat16))  # no autocast: the bridge casts in and out
    assert out.dtype == torch.bfloat16
    bridged = [n for n, m in model.named_modules() if m._forward_pre_hooks]
    assert bridged == [copy]  # the outermost all-fp32 module, not its linears, nor the frozen original


def test_fp32_weights_need_no_masters():
    from vlmtune.config import load_config
    from vlmtune.models.lora import apply_plan
    from vlmtune.models.registry import LLAVA

    model = apply_plan(tiny.llava()[0], LLAVA, load_config(overrides=["train.lora.targets=lm+projector"]).train.lora)
    assert keep_fp32_masters(model, torch.float32) == []
