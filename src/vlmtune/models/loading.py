"""Load a base model + processor through the registry, or a fine-tuned run for inference."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vlmtune.config import ModelConfig
from vlmtune.errors import VlmtuneError
from vlmtune.hub import unreachable_reason
from vlmtune.models.dtype import (attention_kernel, dtype_audit, pick_device, quantization_config, quantized_under,
                                  unquantized_prefixes, weights_dtype)
from vlmtune.models.default import ensure_default_base
from vlmtune.models.generic import GENERIC, spec_for_config
from vlmtune.models.registry import family_for
from vlmtune.models.resolution import limit_image_tokens
from vlmtune.paths import RUN_MARKER



def resolve_model_path(name: str) -> str:
    """'default' is the embedded model (built and cached on first use); anything else is as given."""
    if name == "default":
        return str(ensure_default_base())
    return name


def local_only(path: str) -> bool:
    """A hub id while the hub cannot be reached: read the local HF cache only (no retries)."""
    return not Path(path).exists() and unreachable_reason() is not None


def auto_config(path: str, offline: bool = False):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, local_files_only=offline)
    except (OSError, ValueError) as err:
        if offline:
            raise VlmtuneError(f"model '{path}': not a local directory, not in the Hugging Face cache, and the hub "
                               "cannot be reached; pass a local model directory") from None
        hint = "a local model directory" if not Path(path).exists() else "a directory holding config.json"
        raise VlmtuneError(f"model '{path}' could not be loaded ({str(err).splitlines()[0][:120]}); pass {hint}") from None


def placement(cfg: ModelConfig, device: torch.device, quant) -> str | dict | None:
    """from_pretrained's device_map: model.device_map=auto spreads the layers over the visible GPUs (one
    process, the seed's way); QLoRA loads onto this process's GPU (LOCAL_RANK under DDP); else None."""
    if cfg.device_map == "auto":
        if device.type != "cuda":
            raise VlmtuneError("model.device_map=auto spreads the model over CUDA GPUs and none is visible; unset it")
        return "auto"
    return {"": device} if quant else None


def load_model(cfg: ModelConfig, training: bool, device: torch.device | None = None, bf16: str = "false"):
    """(model, processor, FamilySpec, dtype) for a base checkpoint.

    ``bf16``: the run's train.bf16 when loading for a training step (CPU: frozen weights bf16 under
    autocast, models/dtype.py); other callers keep the fp32 default on a CPU."""
    import transformers

    device = device or pick_device()
    path = resolve_model_path(cfg.name)
    offline = local_only(path)
    config = auto_config(path, offline)
    spec = family_for(getattr(config, "model_type", None), cfg.family)
    if spec is None:  # no registry row: the generic row, read off the model's structure
        spec = spec_for_config(config)
    dtype = weights_dtype(cfg.dtype, device, training, bf16)
    model_cls = getattr(transformers, spec.model_class)
    keep = unquantized_prefixes(spec)  # QLoRA: vision tower, projector and LM head stay as loaded
    quant = quantization_config(cfg.quantization, device, keep)
    model = model_cls.from_pretrained(
        path, dtype=dtype, attn_implementation=attention_kernel(cfg.attn_implementation, device, model_cls),
        quantization_config=quant, device_map=placement(cfg, device, quant), local_files_only=offline,
    )
    if quant is not None:
        # No prepare_model_for_kbit_training: it upcasts every unquantized weight (vision tower,
        # embeddings, LM head) to fp32, and compute with it. apply_plan freezes; fit gives the
        # trainable non-LoRA weights fp32 masters and runs the step under bf16 autocast.
        leaked = quantized_under(model, keep)
        if leaked:
            raise VlmtuneError(f"model.quantization={cfg.quantization}: {len(leaked)} modules meant to stay unquantized "
                               f"were quantized (first: {leaked[0]}); use model.quantization=none")
    elif cfg.device_map is None:  # model.device_map=auto: accelerate placed the layers already
        model = model.to(device)
    if quant is None:
        odd = dtype_audit(model, dtype)
        if odd:
            print(f"note: parameters not in {str(dtype).removeprefix('torch.')}: {'; '.join(odd[:6])}")
    processor = spec.hooks.load_processor(path, offline)
    if getattr(processor, "chat_template", None) is None:  # the row's fallback, picked from config data
        processor.chat_template = spec.fallback_template(config, processor.tokenizer)
    spec = spec.hooks.for_model(spec, model, processor)  # rows: unchanged; generic: reads the chat template
    limit_image_tokens(spec, processor, model.config, cfg.max_image_tokens)  # the same budget wherever it loads
    return model, processor, spec, dtype


def read_run_info(run_dir: Path) -> dict:
    marker = Path(run_dir) / RUN_MARKER
    return json.loads(marker.read_text()) if marker.is_file() else {}


def load_for_inference(path: str | Path, dtype: str = "auto", device: torch.device | None = None):
    """(model, processor, spec) from a run dir (base + adapter), an adapter dir, or a model dir."""
    path = Path(path)
    info = read_run_info(path)
    if info:
        base = ModelConfig(**{**info["model"], "dtype": dtype})
        if info.get("family") == GENERIC:  # trained through the generic row: reload it the same way
            base.family = GENERIC
        weights = path / info["weights"]
        if not weights.is_dir():
            raise VlmtuneError(f"{path}: this run has no trained weights yet (status {info.get('status')}); "
                               "finish it with 'vlmtune train --resume -c RUN/config.yaml'")
    elif (path / "adapter_config.json").is_file():
        base_name = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        base, weights = ModelConfig(name=base_name, dtype=dtype), path
    else:
        return load_model(ModelConfig(name=str(path), dtype=dtype), training=False, device=device)[:3]
    if (weights / "adapter_config.json").is_file():
        from peft import PeftModel

        model, processor, spec, _ = load_model(base, training=False, device=device)
        model = PeftModel.from_pretrained(model, str(weights)).eval()
        return model, processor, spec
    full = ModelConfig(name=str(weights), family=base.family, dtype=dtype, max_image_tokens=base.max_image_tokens)
    return load_model(full, training=False, device=device)[:3]

