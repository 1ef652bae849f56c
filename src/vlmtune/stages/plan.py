"""``vlmtune plan``: what a training run costs in GPU memory, before renting GPUs. No weights are loaded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from vlmtune.config import RunConfig, load_config
from vlmtune.errors import VlmtuneError
from vlmtune.models.planner import TEXT_TOKENS, Hardware, plan
from vlmtune.models.shapes import model_shape
from vlmtune.paths import RUN_MARKER

DEFAULT_GPU_GIB = 80.0


def gpu_gib(text: str | None) -> float:
    """'80GB', '80GiB', '48G' or '80' -> GiB. GPU makers' "80 GB" is 80 GiB (81,920 MiB on an A100)."""
    if text is None:
        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory / 2**30
        return DEFAULT_GPU_GIB
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(gib|gb|g)?\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise VlmtuneError(f"--gpu-mem {text!r}: give the memory of one GPU, e.g. 80GB or 48GB")
    return float(match.group(1))


def split_target(args: list[str]) -> tuple[Path | None, list[str]]:
    """``vlmtune plan RUN_DIR [KEY=VALUE ...]`` or ``vlmtune plan [KEY=VALUE ...]``."""
    if args and "=" not in args[0]:
        run = Path(args[0])
        if not (run / "config.yaml").is_file():
            raise VlmtuneError(f"{run}: not a run directory (no config.yaml); pass a run dir or KEY=VALUE overrides")
        return run, args[1:]
    return None, args


def resolve_config(args: list[str], config_file: Path | None) -> RunConfig:
    run, overrides = split_target(args)
    if run is not None:
        if config_file is not None:
            raise VlmtuneError("vlmtune plan: give a run directory or -c CONFIG, not both")
        config_file = run / "config.yaml"
        if not (run / RUN_MARKER).is_file():
            print(f"note: {run} has no {RUN_MARKER}; reading its config.yaml only")
    return load_config(config_file, overrides)


def _gib(value: float) -> str:
    return f"{value:8.2f}"


def format_plan(p: dict) -> str:
    s, m, pic = p["step"], p["memory_gib"], p["picture"]
    lines = [
        f"model: {p['model']} · family {p['family']} · {p['parameters'] / 1e9:.2f} B parameters",
        f"picture: {pic['lm_tokens']} image tokens in the LM, {pic['vision_tokens']} through the vision tower ({pic['how']})",
        f"step: batch {s['batch']} x {s['seq']} tokens · {s['targets']} (LoRA r={s['r']}) · quantization {s['quantization']}"
        f" · {s['optim']} ({s['optimizer_bytes_per_param']:g} B/param) · checkpointing {'on' if s['checkpointing'] else 'off'}"
        f" · {'bf16 autocast' if s['autocast'] else 'no autocast'} · vision tower "
        f"{'trains' if s['vision_trains'] else 'runs frozen' if s['vision_runs'] else 'cached (feature cache)'}",
        "",
        f"{'memory on one GPU':44} {'GiB':>8}",
    ]
    for row in p["parameter_memory"]:
        label = f"{row['part']} ({row['params'] / 1e9:.3f} B, {row['dtype']})"
        lines.append(f"  parameters  {label:30} {_gib(row['gib'])}")
    lines += [
        f"  {'gradients (fp32, trainable only)':42} {_gib(m['grads'])}",
        f"  {'optimizer state':42} {_gib(m['optimizer'])}",
        f"  {'activations kept for backward':42} {_gib(m['activations_kept'])}",
        f"  {'one layer recomputed (checkpointing)':42} {_gib(m['recomputed_layer'])}",
        f"  {'logits and loss':42} {_gib(m['logits'])}",
        f"  {'total':42} {_gib(m['total'])}",
        f"  each more sample in the batch adds {p['per_sample_gib']:.2f} GiB; trainable parameters {p['trainable']:,}",
        "",
        f"{'ways to run it on ' + str(p['hardware']['gpus']) + ' x ' + format(p['hardware']['gpu_gib'], 'g') + ' GiB':50}"
        f"{'GiB/GPU':>9} {'fits':>5} {'largest batch':>14}",
    ]
    for o in p["options"]:
        cpu = f"  (+{o['cpu_gib']:.0f} GiB CPU RAM)" if o["cpu_gib"] else ""
        lines.append(f"  {o['option']:48}{o['per_gpu_gib']:9.1f} {'yes' if o['fits'] else 'no':>5} {o['largest_batch']:>14}{cpu}")
    need = p["recommendation"]["gpus_needed"]
    lines += ["", f"GPUs of this size needed: FSDP/ZeRO-3 {need['zero3'] or '>64'}, with checkpointing "
                  f"{need['zero3_checkpointing'] or '>64'}, model.device_map=auto {need['device_map'] or '>64'} "
                  f"(a GPU counts as {p['hardware']['usable_gib']} GiB usable)",
              f"recommendation: {p['recommendation']['text']}"]
    lines += [f"note: {n}" for n in p["notes"]]
    return "\n".join(lines)


def run_plan(args: list[str], config_file: Path | None = None, gpus: int | None = None, gpu_mem: str | None = None,
             as_json: bool = False, seq_len: int | None = None, text_tokens: int = TEXT_TOKENS) -> dict:
    cfg = resolve_config(args, config_file)
    if gpus is not None and gpus < 1:
        raise VlmtuneError(f"--gpus {gpus}: must be >= 1")
    if seq_len is not None and seq_len < 1 or text_tokens < 2:
        raise VlmtuneError("--seq-len must be >= 1 and --text-tokens >= 2")
    count = gpus or (torch.cuda.device_count() if torch.cuda.is_available() else 1)
    result = plan(cfg, model_shape(cfg.model, cfg.train.lora), Hardware(count, gpu_gib(gpu_mem)), seq_len, text_tokens)
    print(json.dumps(result, indent=1) if as_json else format_plan(result))
    return result
