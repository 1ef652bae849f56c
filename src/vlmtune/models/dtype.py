"""Dtype and device policy: bf16 on GPUs that have it, fp32 weights on CPU; never fp16 training."""

from __future__ import annotations

import torch

from vlmtune.errors import VlmtuneError

_NAMES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


def pick_device() -> torch.device:
    """This process's GPU (LOCAL_RANK under a distributed launcher), else the CPU."""
    if torch.cuda.is_available():
        import os

        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """AVX-512-BF16 / AMX: bf16 autocast is then ~1.5x faster than fp32 (see bench/)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def weights_dtype(name: str, device: torch.device, training: bool) -> torch.dtype:
    if name == "fp16" and training:
        raise VlmtuneError("model.dtype=fp16 is refused for training (overflows); use bf16 or fp32")
    if name != "auto":
        return _NAMES[name]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    # CPU: keep fp32 master weights; compute runs under bf16 autocast where the CPU supports it.
    return torch.float32


def autocast_bf16(setting: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether training should run under bf16 autocast (Trainer's ``bf16`` flag)."""
    if setting == "false" or dtype == torch.bfloat16:
        return False  # bf16 weights compute in bf16 already
    supported = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()
    if setting == "true" and not supported:
        raise VlmtuneError("train.bf16=true but this device has no bf16 support; use train.bf16=false")
    return supported


def dtype_audit(model, expected: torch.dtype) -> list[str]:
    """Floating-point parameters not in the expected dtype (grouped by top-level module path)."""
    odd: dict[str, set[str]] = {}
    for name, param in model.named_parameters():
        if param.is_floating_point() and param.dtype != expected:
            odd.setdefault(".".join(name.split(".")[:3]), set()).add(str(param.dtype).removeprefix("torch."))
    return [f"{k} ({', '.join(sorted(v))})" for k, v in sorted(odd.items())]


def attention_kernel(name: str, device: torch.device) -> str:
    """``auto``: FlashAttention-2 on CUDA when the package is installed, else PyTorch SDPA."""
    if name != "auto":
        return name
    if device.type == "cuda":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return "sdpa"


def quantization_config(mode: str, device: torch.device, keep_whole: list[str]):
    """BitsAndBytes config for QLoRA, or None; vision tower and projector stay unquantized."""
    if mode == "none":
        return None
    if device.type != "cuda":
        raise VlmtuneError(f"model.quantization={mode} needs a CUDA GPU (bitsandbytes); use model.quantization=none on CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise VlmtuneError(f"model.quantization={mode} needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=keep_whole)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=keep_whole)
