import pytest
import torch

import tiny
from vlmtune.config import ModelConfig
from vlmtune.errors import VlmtuneError
from vlmtune.models.dtype import attention_kernel, dtype_audit, quantization_config, weights_dtype
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


def test_audit_names_modules_left_in_another_dtype():
    model, _ = tiny.llava()
    model.to(torch.bfloat16)
    model.model.multi_modal_projector.linear_1.to(torch.float32)
    assert dtype_audit(model, torch.bfloat16) == ["model.multi_modal_projector.linear_1 (float32)"]


def test_bf16_load_leaves_nothing_behind(tiny_model_dir):
    model, _, spec, dtype = load_model(ModelConfig(name=str(tiny_model_dir), dtype="bf16"), training=True)
    assert dtype == torch.bfloat16 and spec.name == "llava"
    assert dtype_audit(model, torch.bfloat16) == []
