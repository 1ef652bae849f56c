"""Dtype and device policy: bf16 on GPUs that have it, fp32 weights on CPU; never fp16 training."""

from __future__ import annotations

import re

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


def weights_dtype(name: str, device: torch.device, training: bool, bf16: str = "false") -> torch.dtype:
    """The dtype weights load in; ``bf16`` is the run's train.bf16 (auto/true/false)."""
    if name == "fp16" and training:
        raise VlmtuneError("model.dtype=fp16 is refused for training (overflows); use bf16 or fp32")
    if name != "auto":
        return _NAMES[name]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    # CPU training: frozen weights in bf16 where the CPU computes in bf16, as on a GPU. Under fp32
    # weights autocast re-casts every frozen matrix to bf16 in every forward, and the process holds
    # both copies; LoRA weights and whole-trained modules keep fp32 masters either way
    # (keep_fp32_masters). Inference on a CPU stays fp32. bench/README.md has the on/off figures.
    # Only where the step runs under bf16 autocast (train.bf16 not false): without autocast bf16
    # weights would mean pure-bf16 compute.
    if device.type == "cpu" and training and bf16 != "false" and cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


def autocast_bf16(setting: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether training should run under bf16 autocast (Trainer's ``bf16`` flag).

    bf16 weights get it too (unless train.bf16=false): their trainable non-LoRA parameters are
    fp32 masters (``keep_fp32_masters``), and autocast keeps those modules' matmuls in bf16.
    """
    if setting == "false":
        return False
    if dtype == torch.bfloat16:
        return True  # the weights are bf16 already: autocast adds no precision loss
    supported = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()
    if setting == "true" and not supported:
        raise VlmtuneError("train.bf16=true but this device has no bf16 support; use train.bf16=false")
    return supported


def keep_fp32_masters(model, compute: torch.dtype) -> list[str]:
    """Cast every trainable parameter that is not a LoRA weight to fp32 in place; returns their names.

    bf16 keeps ~8 mantissa bits: an update below half a unit in the last place (a 2e-5 step on a
    weight of 0.02) rounds to nothing, so a bf16 projector, image_newline, IDEFICS gate or full
    fine-tune barely moves (measured: 0.23x the fp32 update on a tiny LLaVA). PEFT upcasts its LoRA
    weights itself. Under bf16 autocast the matmuls still run in bf16; where no autocast runs
    (generation right after training), the modules built only of fp32 weights get a dtype bridge:
    inputs cast to fp32, outputs back to ``compute``, so they fit between bf16 neighbours.
    """
    masters = {id(p): n for n, p in model.named_parameters()
               if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16) and "lora_" not in n}
    if not masters:
        return []
    for param in model.parameters():
        if id(param) in masters:
            param.data = param.data.float()
    if any(p.dtype != torch.float32 for p in model.parameters() if p.is_floating_point()):
        for module in _fp32_islands(model, set(masters)):
            module.register_forward_pre_hook(lambda m, args, kwargs: (_cast(args, torch.float32),
                                                                      _cast(kwargs, torch.float32)), with_kwargs=True)
            module.register_forward_hook(lambda m, args, output: _cast(output, compute))
    return sorted(masters.values())


def _fp32_islands(module, masters: set[int]):
    """The outermost called modules whose weights are all fp32 and include a master."""
    from torch import nn

    params = list(module.parameters())
    if (params and all(p.dtype == torch.float32 for p in params) and any(id(p) in masters for p in params)
            and not isinstance(module, (nn.ModuleDict, nn.ModuleList))):  # containers are never called
        yield module
        return
    for child in module.children():
        yield from _fp32_islands(child, masters)


def _cast(value, dtype: torch.dtype):
    """Floating tensors in a tensor / tuple / list / dict cast to ``dtype``; everything else as is."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)) and not hasattr(value, "_fields"):
        return type(value)(_cast(v, dtype) for v in value)
    if type(value) is dict:
        return {k: _cast(v, dtype) for k, v in value.items()}
    return value


def dtype_audit(model, expected: torch.dtype) -> list[str]:
    """Floating-point parameters not in the expected dtype (grouped by top-level module path)."""
    odd: dict[str, set[str]] = {}
    for name, param in model.named_parameters():
        if param.is_floating_point() and param.dtype != expected:
            odd.setdefault(".".join(name.split(".")[:3]), set()).add(str(param.dtype).removeprefix("torch."))
    return [f"{k} ({', '.join(sorted(v))})" for k, v in sorted(odd.items())]


def attention_kernel(name: str, device: torch.device, model_class: type | None = None) -> str:
    """``auto``: FlashAttention-2 on CUDA when installed and the model class supports it, else PyTorch SDPA.

    Gemma 3 and PaliGemma declare ``_supports_flash_attn = False``: FlashAttention would drop their
    bidirectional mask over the image (and prompt) prefix, so ``auto`` must not pick it for them.
    """
    if name != "auto":
        if name == "flash_attention_2" and model_class is not None and not getattr(model_class, "_supports_flash_attn", True):
            raise VlmtuneError(f"model.attn_implementation=flash_attention_2: {model_class.__name__} does not support "
                               "it (it would drop the bidirectional image mask); use sdpa or auto")
        return name
    if device.type == "cuda" and getattr(model_class, "_supports_flash_attn", True):
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return "sdpa"


def unquantized_prefixes(spec) -> list[str]:
    """Module paths QLoRA leaves unquantized: the vision tower, the projector and the LM head.

    They are small and sensitive, and the projector trains whole. transformers matches
    ``llm_int8_skip_modules`` against full module paths (``quantizers_utils.should_convert_module``:
    a prefix up to a module boundary, or a suffix), so bare names such as "vision_tower" match
    nothing under ``model.vision_tower``: pass the full prefixes.
    """
    return [_literal(spec.vision_prefix), *spec.projector_modules, "lm_head"]


def _literal(regex: str) -> str:
    """A registry prefix regex such as ``model\\.vision_tower`` as the plain path it stands for."""
    plain = re.sub(r"\\(.)", r"\1", regex)
    if re.search(r"[\\^$*+?()\[\]{}|]", plain):
        raise ValueError(f"vision prefix {regex!r} is not a plain module path")
    return plain


def quantized_under(model, prefixes: list[str]) -> list[str]:
    """Modules under ``prefixes`` that are bitsandbytes 4/8-bit linears (by class name: no bnb import)."""
    quantized = {"Linear4bit", "Linear8bitLt"}
    return [name for name, module in model.named_modules()
            if any(c.__name__ in quantized for c in type(module).__mro__)
            and any(name == p or name.startswith(p + ".") for p in prefixes)]


def quantization_config(mode: str, device: torch.device, keep_whole: list[str]):
    """BitsAndBytes config for QLoRA, or None; ``keep_whole`` (``unquantized_prefixes``) stays unquantized.

    Compute runs in bf16 (``bnb_4bit_compute_dtype``); the unquantized frozen weights stay in the
    dtype they were loaded in (no fp32 upcast as ``prepare_model_for_kbit_training`` would do).
    """
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
