"""``vlmtune plan``'s answer as data: the configured step's memory, the ways to run it, a recommendation.

The step is the one ``vlmtune train`` would run with the same config on a bf16 GPU (its dtype,
autocast, LoRA, feature-cache and logits policy); ``models/memory.py`` does the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from vlmtune.config import RunConfig
from vlmtune.models.memory import (GiB, NF4_BYTES, USABLE, Workload, activation_parts, gpus_needed, largest_batch,
                                   layout, optimizer_bytes)
from vlmtune.models.shapes import ModelShape

TEXT_TOKENS = 64  # prompt + answer tokens beside the image tokens, unless --text-tokens says otherwise
# Accelerate configs shipped in configs/accelerate/ for each way of running.
LAUNCH = {"ddp": "configs/accelerate/ddp.yaml", "zero2": "configs/accelerate/deepspeed-zero2.yaml",
          "zero3": "configs/accelerate/fsdp.yaml", "zero3_offload": "configs/accelerate/deepspeed-zero3.yaml"}


@dataclass(frozen=True)
class Hardware:
    gpus: int
    gpu_gib: float

    @property
    def usable(self) -> float:
        return self.gpu_gib * GiB * USABLE


def workload(cfg: RunConfig, shape: ModelShape, seq: int | None = None, text_tokens: int = TEXT_TOKENS) -> Workload:
    """The step ``vlmtune train`` runs for ``cfg`` on a bf16 GPU."""
    targets = cfg.train.lora.targets
    vision_trains = shape.full or "vision" in targets
    cached = cfg.train.feature_cache and shape.source.spec.feature_cache and not vision_trains
    attention = cfg.model.attn_implementation
    return Workload(
        batch=cfg.train.batch_size, seq=seq or shape.picture.lm + text_tokens, answer_tokens=max(1, text_tokens // 2),
        weights_bytes=4 if cfg.model.dtype == "fp32" else 2, quantization=cfg.model.quantization,
        autocast=cfg.train.bf16 != "false", input_casts=cfg.train.bf16 == "false",
        dropout=cfg.train.lora.dropout > 0, r=cfg.train.lora.r,
        checkpointing=cfg.train.gradient_checkpointing, optim=cfg.train.optim,
        attention="sdpa" if attention == "auto" else attention, vision_trains=vision_trains, vision_runs=not cached,
        projector_trains=shape.full or "projector" in targets, logits_to_keep=shape.source.spec.logits_to_keep,
    )


def parameter_rows(shape: ModelShape, w: Workload) -> list[dict]:
    """Parameter memory by part and dtype."""
    dtype = "fp32" if w.weights_bytes == 4 or shape.full else "bf16"
    size = 4 if dtype == "fp32" else 2
    rows = []
    for part in ("vision", "projector", "lm"):
        count = shape.params[part]
        if part == "lm" and w.quantization != "none":
            per = NF4_BYTES if w.quantization == "4bit" else 1
            rows.append({"part": "lm (quantized linears)", "params": shape.quantizable,
                         "dtype": "nf4" if w.quantization == "4bit" else "int8", "gib": shape.quantizable * per / GiB})
            count -= shape.quantizable
        rows.append({"part": part, "params": count, "dtype": dtype, "gib": count * size / GiB})
    if shape.trainable and not shape.full:
        rows.append({"part": "trainable copies", "params": shape.trainable, "dtype": "fp32",
                     "gib": shape.trainable * 4 / GiB})
    return rows


def options(shape: ModelShape, w: Workload, hw: Hardware) -> list[dict]:
    """Each way of running this step: per-GPU memory on ``hw``, whether it fits, the largest batch."""
    gc = replace(w, checkpointing=True)
    lora = not shape.full and shape.lora["lm"] > 0
    rows = [("1 GPU, as configured", "single", w, 1)]
    if not w.checkpointing:
        rows.append(("1 GPU + gradient checkpointing", "single", gc, 1))
    if lora and w.quantization == "none":
        rows.append(("1 GPU + QLoRA (4-bit) + checkpointing", "single", replace(gc, quantization="4bit"), 1))
    n = hw.gpus
    if n > 1:
        rows.append((f"{n} GPUs, DDP", "ddp", w, n))
        if not w.checkpointing:
            rows.append((f"{n} GPUs, DDP + checkpointing", "ddp", gc, n))
        if lora and w.quantization == "none":
            rows.append((f"{n} GPUs, DDP + QLoRA (4-bit) + checkpointing", "ddp", replace(gc, quantization="4bit"), n))
        rows.append((f"{n} GPUs, DeepSpeed ZeRO-2", "zero2", w, n))
    if w.quantization == "none":  # FSDP/ZeRO-3 shard no bitsandbytes 4-bit weights here (see README)
        if n > 1:
            rows.append((f"{n} GPUs, FSDP / ZeRO-3", "zero3", w, n))
            if not w.checkpointing:
                rows.append((f"{n} GPUs, FSDP / ZeRO-3 + checkpointing", "zero3", gc, n))
        rows.append((f"{n} GPU{'s' if n > 1 else ''}, ZeRO-3 + CPU offload + checkpointing", "zero3_offload", gc, n))
    if n > 1:
        rows.append((f"{n} GPUs, model.device_map=auto (1 process)", "device_map", w, n))
    found = []
    for label, mode, work, gpus in rows:
        memory = layout(shape, work, mode, gpus)
        found.append({"option": label, "mode": mode, "gpus": gpus, "checkpointing": work.checkpointing,
                      "quantization": work.quantization, "per_gpu_gib": round(memory.total / GiB, 2),
                      "cpu_gib": round(memory.cpu / GiB, 2), "fits": memory.total <= hw.usable,
                      "largest_batch": largest_batch(shape, work, mode, gpus, hw.usable)})
    return found


def recommend(shape: ModelShape, w: Workload, hw: Hardware, rows: list[dict]) -> dict:
    """The option that fits with the fewest changes to the model and the most GPUs busy: bf16 before
    4-bit (QLoRA changes the base), then data parallel, one GPU, ZeRO-2, sharding, device_map,
    offload; no checkpointing before checkpointing. Also how many GPUs of this size sharding needs."""
    preferred = ("ddp", "single", "zero2", "zero3", "device_map", "zero3_offload")
    fitting = [r for r in rows if r["fits"]]
    fitting.sort(key=lambda r: (r["quantization"] != w.quantization, preferred.index(r["mode"]), r["checkpointing"]))
    need = {mode: gpus_needed(shape, w, mode, hw.usable) for mode in ("zero3", "device_map")}
    need["zero3_checkpointing"] = gpus_needed(shape, replace(w, checkpointing=True), "zero3", hw.usable)
    if not fitting:
        return {"option": None, "gpus_needed": need,
                "text": f"nothing fits {hw.gpus} x {hw.gpu_gib:g} GiB: lower train.batch_size or model.max_image_tokens, "
                        f"or use more GPUs (FSDP + checkpointing needs {need['zero3_checkpointing'] or 'more than 64'})"}
    best = fitting[0]
    turn_on = [t for t, on in (("train.gradient_checkpointing=true", best["checkpointing"] and not w.checkpointing),
                               ("model.quantization=4bit", best["quantization"] != w.quantization)) if on]
    how = {"single": "vlmtune train ...", "device_map": "vlmtune train model.device_map=auto ..."}.get(
        best["mode"], f"accelerate launch --config_file {LAUNCH.get(best['mode'])} --num_processes {best['gpus']} "
                      "-m vlmtune train ...")
    text = (f"{best['option']}: {best['per_gpu_gib']} GiB per GPU, largest batch {best['largest_batch']} per GPU"
            + (f"; turn on {' and '.join(turn_on)}" if turn_on else "") + f"; run: {how}")
    return {"option": best["option"], "mode": best["mode"], "turn_on": turn_on, "command": how,
            "largest_batch": best["largest_batch"], "gpus_needed": need, "text": text}


def plan(cfg: RunConfig, shape: ModelShape, hw: Hardware, seq: int | None = None,
         text_tokens: int = TEXT_TOKENS) -> dict:
    """Everything ``vlmtune plan`` prints, as a JSON-able dict."""
    w = workload(cfg, shape, seq, text_tokens)
    one = layout(shape, w, "single", 1)
    kept, layer = activation_parts(shape, w)
    rows = options(shape, w, hw)
    too_long = w.seq > cfg.data.max_length
    return {
        "model": shape.source.label, "family": shape.source.spec.name, "parameters": shape.total,
        "picture": {"lm_tokens": shape.picture.lm, "vision_tokens": shape.picture.vision, "how": shape.picture.how,
                    "max_image_tokens": cfg.model.max_image_tokens},
        "step": {"batch": w.batch, "seq": w.seq, "targets": cfg.train.lora.targets, "r": w.r,
                 "checkpointing": w.checkpointing, "quantization": w.quantization, "optim": w.optim,
                 "optimizer_bytes_per_param": optimizer_bytes(w.optim), "autocast": w.autocast,
                 "vision_runs": w.vision_runs, "vision_trains": w.vision_trains, "attention": w.attention},
        "trainable": shape.trainable, "parameter_memory": parameter_rows(shape, w),
        "memory_gib": {**one.gib(), "activations_kept": round(kept / GiB, 2), "recomputed_layer": round(layer / GiB, 2)},
        "per_sample_gib": round((layout(shape, replace(w, batch=3), "single", 1).total
                                 - layout(shape, replace(w, batch=2), "single", 1).total) / GiB, 3),
        "hardware": {"gpus": hw.gpus, "gpu_gib": hw.gpu_gib, "usable_gib": round(hw.usable / GiB, 1)},
        "options": rows, "recommendation": recommend(shape, w, hw, rows),
        "notes": ([f"data.max_length={cfg.data.max_length} is below the planned {w.seq} tokens per sample: training "
                   "would refuse these rows; raise data.max_length or lower model.max_image_tokens"] if too_long else []),
    }

