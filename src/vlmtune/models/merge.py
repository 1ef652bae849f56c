"""Merge LoRA weights into their base: the weights part of ``vlmtune merge`` (the stage orchestrates).

PEFT's ``merge_and_unload`` does the arithmetic (W + scale * B @ A) and swaps every
``modules_to_save`` wrapper (e.g. a trained projector) for its trained copy, so the result is
the family's ordinary model class. This module adds what makes the folder safe and usable:
it never writes over a user's folder, keeps the base checkpoint's dtype, refuses quantized
base weights, and ships the processor with its chat template and stop tokens.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from vlmtune.config import ModelConfig
from vlmtune.errors import VlmtuneError
from vlmtune.models.loading import auto_config, load_model, read_run_info, resolve_model_path
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.paths import RUN_MARKER

MERGED_MARKER = "vlmtune_merged.json"
ADAPTER_CONFIG = "adapter_config.json"
# Files whose presence means a processor was saved beside the adapter (train does that).
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
PEFT_LEFTOVERS = ("lora_", "modules_to_save", "original_module", "base_layer")


@dataclass
class MergeSource:
    path: Path  # what the user passed
    base: ModelConfig  # the base checkpoint the adapter was trained on
    adapter: Path  # the PEFT adapter folder
    run_info: dict  # vlmtune_run.json ({} for a bare adapter folder)


def find_source(path: Path, base: str | None = None) -> MergeSource:
    """What to merge: a run dir's adapter or a bare adapter folder; ``base`` replaces the recorded base."""
    path = Path(path)
    if not path.exists():
        raise VlmtuneError(f"{path}: not found")
    info = read_run_info(path)
    if info:
        known = {f.name for f in fields(ModelConfig)}
        cfg = ModelConfig(**{k: v for k, v in info["model"].items() if k in known})
        adapter = path / info.get("weights", "adapter")
        if not (adapter / ADAPTER_CONFIG).is_file():
            if (adapter / "config.json").is_file():
                raise VlmtuneError(f"{path}: the run saved full model weights in {adapter}, not a LoRA adapter: "
                                   "nothing to merge, that folder already loads with plain transformers")
            raise VlmtuneError(f"{path}: run has no adapter yet (status {info.get('status', '?')}); finish training first")
    elif (path / ADAPTER_CONFIG).is_file():
        recorded = json.loads((path / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
        if not recorded and not base:
            raise VlmtuneError(f"{path / ADAPTER_CONFIG}: names no base model; pass --base")
        cfg, adapter = ModelConfig(name=recorded or base), path
    else:
        raise VlmtuneError(f"{path}: neither a vlmtune run ({RUN_MARKER}) nor a PEFT adapter ({ADAPTER_CONFIG}): "
                           "nothing to merge")
    if base:
        cfg = replace(cfg, name=base)
    return MergeSource(path, cfg, adapter, info)


def base_dtype(base_path: str) -> str:
    """The checkpoint's own dtype name; refuses quantized checkpoints (the merge would round away the update)."""
    config = auto_config(base_path)
    quant = getattr(config, "quantization_config", None)
    if quant:
        quant = quant if isinstance(quant, dict) else quant.to_dict()
        bits = ("4-bit" if quant.get("load_in_4bit") else "8-bit" if quant.get("load_in_8bit")
                else quant.get("quant_method", "quantized"))
        raise VlmtuneError(f"base {base_path} is stored {bits}: adding the LoRA update to quantized weights would "
                           "round most of it away; pass --base with the unquantized checkpoint of the same model")
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if dtype not in DTYPE_NAMES:
        raise VlmtuneError(f"base {base_path} is stored as {dtype}; vlmtune merges fp32, bf16 or fp16 checkpoints")
    return DTYPE_NAMES[dtype]


def check_output(out: Path, overwrite: bool) -> None:
    """OUT must be new or empty; --overwrite replaces only a folder an earlier merge wrote."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VlmtuneError(f"{out}: exists and is not a folder; choose another output folder")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise VlmtuneError(f"{out}: folder is not empty; choose a new folder (or --overwrite to replace an earlier merge)")
    if not (out / MERGED_MARKER).is_file():
        raise VlmtuneError(f"{out}: not written by 'vlmtune merge' (no {MERGED_MARKER}), so --overwrite will not "
                           "delete it; choose a new folder")


def load_adapted(source: MergeSource, device: torch.device):
    """(PEFT model, processor, spec, dtype name) with the base in its own dtype, never quantized."""
    from peft import PeftModel

    base_path = resolve_model_path(source.base.name)
    dtype = base_dtype(base_path)
    if source.base.quantization != "none":
        print(f"note: the run trained on a {source.base.quantization} base; merging into the full-precision "
              f"{dtype} base, so outputs can differ slightly from the quantized base+adapter in its report")
    cfg = replace(source.base, name=base_path, dtype=dtype, quantization="none")
    model, processor, spec, _ = load_model(cfg, training=False, device=device)
    if any((source.adapter / name).is_file() for name in PROCESSOR_FILES):  # the processor the run trained with
        processor = spec.hooks.load_processor(str(source.adapter))
    model = PeftModel.from_pretrained(model, str(source.adapter)).eval()
    return model, processor, spec, dtype


def merged_model(peft_model):
    """PEFT's merge; verifies that no adapter wrapper is left behind."""
    merged = peft_model.merge_and_unload(safe_merge=True)  # safe_merge: refuse NaNs rather than save them
    leftovers = [n for n, _ in merged.named_parameters() if any(s in n for s in PEFT_LEFTOVERS)]
    if leftovers:
        raise VlmtuneError(f"merge left adapter parameters behind ({leftovers[0]} ...); this PEFT version cannot merge it")
    return merged


def prepare_for_plain_use(model, processor, spec) -> None:
    """What plain transformers needs to prompt and stop like vlmtune: the chat template and stop ids."""
    if not getattr(processor, "chat_template", None):  # the registry's fallback, now stored with the model
        processor.chat_template = spec.fallback_template(model.config, processor.tokenizer)
    tok = PromptAnswerTokenizer(processor, spec)
    model.generation_config.eos_token_id = tok.stop_token_ids()
    model.generation_config.pad_token_id = tok.tokenizer.pad_token_id


def adapter_summary(source: MergeSource) -> dict:
    """What the adapter was (rank, targets, modules trained whole), for the provenance record."""
    adapter_cfg = json.loads((source.adapter / ADAPTER_CONFIG).read_text())
    return {k: adapter_cfg.get(k) for k in ("r", "lora_alpha", "target_modules", "modules_to_save")}


def write_folder(tmp: Path, out: Path) -> None:
    """Move a completely written folder into place, so a failed merge never leaves half a model at OUT."""
    if out.exists():
        shutil.rmtree(out)  # empty, or checked by check_output to be an earlier merge
    os.replace(tmp, out)


def write_merged(model, processor, out: Path, extra_files: dict[str, str]) -> Path:
    """Save model + processor (+ text files such as the card) into ``out`` atomically."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        for name, text in extra_files.items():
            (tmp / name).write_text(text)
        write_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
