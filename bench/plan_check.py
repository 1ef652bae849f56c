"""The memory planner (``vlmtune plan``) against real figures; CPU, seconds, no weights.

    python bench/plan_check.py            # prints the table, writes bench/results/plan_check.json

1. Measured peaks (``torch.cuda.max_memory_allocated``) in results/gpu_check_h200.json, planned
   under the settings those runs used (bench/gpu_check.py: bf16 weights, fp32 LoRA, no autocast,
   LoRA dropout 0.05, AdamW). Pass: within 15 %.
2. The seed's hardware story: LLaVA-1.6 7B in bf16 with device_map="auto" did not fit 2 x 48 GB
   and fit 3 x 48 GB; the 34B needed about 300 GB. Assumed: LoRA on the LM and the vision
   tower's attention/MLP, HF Trainer with bf16=True (autocast), stock loss (logits everywhere),
   no gradient checkpointing, any-resolution at 672 px (2,928 image tokens) + 64 text tokens,
   batch 1-4 (the seed does not say which).
3. LLaMA-Factory's published estimates for 7B: LoRA ~16 GB, QLoRA (4-bit) ~6 GB. Assumed: their
   defaults (LoRA r=8 on all linears, dropout 0, gradient checkpointing on, bf16), batch 1 at
   their cutoff_len 2048, stock loss; planned on LLaVA-1.5-7B, whose Vicuna LM is the Llama-2-7B
   shape (its 0.3 B vision tower adds 0.6 GiB that a text-only 7B does not have).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from vlmtune.config import load_config  # noqa: E402
from vlmtune.models.memory import GiB, USABLE, Workload, layout  # noqa: E402
from vlmtune.models.planner import workload  # noqa: E402
from vlmtune.models.shapes import model_shape  # noqa: E402

MEASURED = json.loads((ROOT / "bench/results/gpu_check_h200.json").read_text())
TOLERANCE = 0.15


def shape(name: str, targets: str, *extra: str):
    cfg = load_config(overrides=[f"model.name={name}", f"train.lora.targets={targets}", "data.max_length=4096", *extra])
    return cfg, model_shape(cfg.model, cfg.train.lora)


def measured_peaks() -> list[dict]:
    step, fit = MEASURED["step_7b_lm+projector"], MEASURED["fit_7b_vision_lora_gc"]
    # gpu_check.py: torch AdamW, no autocast on bf16 weights, answer tokens ~6 per sample.
    # PEFT's input casts stayed on there (input_casts=True), as in every stock HF/PEFT loop below.
    base = dict(batch=step["batch"], seq=step["seq"], answer_tokens=6, autocast=False, dropout=True, optim="adamw_torch",
                input_casts=True)
    cases = [
        ("LoRA lm+projector, stock loss (pixels + logits everywhere)", "lm+projector",
         Workload(**base, all_logits=True, vision_runs=True), step["stock_peak_gib"]),
        ("LoRA lm+projector, vlmtune (feature cache, answer-only logits)", "lm+projector",
         Workload(**base, vision_runs=False), step["ours_peak_gib"]),
        ("LoRA lm+vision+projector + gradient checkpointing (fit)", "lm+vision+projector",
         Workload(**base, checkpointing=True, vision_trains=True), fit["peak_gib"]),
    ]
    rows = []
    for label, targets, w, peak in cases:
        _, s = shape("llava-1.5-7b", targets)
        planned = layout(s, w, "single", 1).total / GiB
        rows.append({"check": label, "planned_gib": round(planned, 2), "measured_gib": peak,
                     "error_pct": round(100 * (planned - peak) / peak, 1),
                     "pass": abs(planned - peak) <= TOLERANCE * peak})
    return rows


def seed_story() -> list[dict]:
    rows = []
    for name in ("llava-next-mistral-7b", "llava-next-34b"):
        cfg, s = shape(name, "lm+vision", "train.lora.dropout=0.05")  # the seed's (LLaVA's scripts') LoRA dropout
        for batch in (1, 2, 3, 4):
            w = replace(workload(cfg, s), batch=batch, all_logits=True, input_casts=True)
            total = layout(s, w, "single", 1).total
            row = {"model": name, "batch": batch, "seq": w.seq, "total_gib": round(total / GiB, 1),
                   "total_gb": round(total / 1e9, 1)}
            for gpus in (2, 3):  # device_map=auto: one process, the layers spread over the GPUs
                row[f"fits_{gpus}x48"] = layout(s, w, "device_map", gpus).total <= 48 * GiB * USABLE
            rows.append(row)
    return rows


def llama_factory() -> list[dict]:
    rows = []
    for quant, published in (("none", 16), ("4bit", 6)):
        cfg, s = shape("llava-1.5-7b", "lm", "train.lora.r=8", "train.lora.dropout=0",
                       "train.gradient_checkpointing=true", f"model.quantization={quant}")
        w = replace(workload(cfg, s), batch=1, seq=2048, all_logits=True, input_casts=True)
        total = layout(s, w, "single", 1).total
        rows.append({"check": f"LLaMA-Factory 7B {'QLoRA 4-bit' if quant == '4bit' else 'LoRA'}", "published_gb": published,
                     "planned_gb": round(total / 1e9, 2), "planned_gib": round(total / GiB, 2),
                     "error_pct": round(100 * (total / 1e9 - published) / published, 1)})
    return rows


def main() -> dict:
    result = {"measured": measured_peaks(), "seed_story": seed_story(), "llama_factory": llama_factory()}
    print(f"{'check':66} {'planned':>8} {'measured':>9} {'error':>7}")
    for r in result["measured"]:
        print(f"{r['check']:66} {r['planned_gib']:8.2f} {r['measured_gib']:9.2f} {r['error_pct']:+6.1f}%")
    for r in result["llama_factory"]:
        print(f"{r['check'] + ' (GB)':66} {r['planned_gb']:8.2f} {r['published_gb']:9.2f} {r['error_pct']:+6.1f}%")
    print(f"\n{'seed story (device_map=auto, 48 GB GPUs)':44} {'batch':>5} {'GiB':>7} {'2x48':>5} {'3x48':>5}")
    for r in result["seed_story"]:
        print(f"{r['model']:44} {r['batch']:5} {r['total_gib']:7.1f} {str(r['fits_2x48']):>5} {str(r['fits_3x48']):>5}")
    out = ROOT / "bench/results/plan_check.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
