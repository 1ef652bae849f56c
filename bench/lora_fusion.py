"""LoRA's update fused into an addmm (``training/fused_lora.py``) on/off, side by side in one process.

    python bench/lora_fusion.py [--rounds 6] [--batch 8] [--out bench/results/lora_fusion_cpu.json]

The embedded default set up as ``fit`` trains it (frozen weights bf16 where the CPU has bf16,
feature cache, eager attention, no PEFT input casts, LoRA r16 on the LM + projector, answer-only
loss, AdamW), the same batches for both variants, which alternate step by step after one warm-up
step each. Also reports, on one batch from the same start, how far the fused loss and gradients
are from an fp32 reference of the same weights, against PEFT's own distance to it (bf16
rounding: the fused sum rounds once where PEFT rounds twice).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from peft.helpers import disable_input_dtype_casting

from demo_levers import ANSWERS, PROMPT, pictures, stats, trained_model
from vlmtune.models.dtype import cpu_has_bf16
from vlmtune.models.loading import load_model
from vlmtune.config import ModelConfig
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.training.collate import Collator
from vlmtune.training.features import compute_features
from vlmtune.training.fused_lora import fused_lora
from vlmtune.training.trainer import answer_loss

HERE = Path(__file__).resolve().parent


def loss_and_grads(model, spec, inputs, fused: bool, bf16: bool = True):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), disable_input_dtype_casting(model), \
            fused_lora(model, fused):
        loss = answer_loss(model, spec, inputs)[0]
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return loss.item(), grads


def agreement(model, spec, inputs) -> dict:
    with torch.no_grad():  # a trained-looking adapter: B starts at zero, where both sums are the base
        gen = torch.Generator().manual_seed(0)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.002)
    plain, fused = loss_and_grads(model, spec, inputs, False), loss_and_grads(model, spec, inputs, True)
    model.float()  # the reference: the same weights (bf16 ones upcast exactly) in fp32, no autocast
    ref = loss_and_grads(model, spec, inputs, False, bf16=False)
    out = {"loss fp32 reference": ref[0]}
    for name, (loss, grads) in (("PEFT", plain), ("fused", fused)):
        rel = [((grads[n] - g).norm() / g.norm().clamp_min(1e-12)).item() for n, g in ref[1].items()]
        out[name] = {"loss": loss, "gradient rel. L2 diff to fp32, median": statistics.median(rel),
                     "max": max(rel), "tensors": len(rel)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "lora_fusion_cpu.json")
    args = ap.parse_args()
    model, processor, spec, dtype = load_model(ModelConfig(name="default"), training=True, bf16="auto")
    model = trained_model(model, spec, dtype)
    enc = PromptAnswerTokenizer(processor, spec, 256)
    n = args.batch * (args.rounds + 1)
    exs = [enc.encode(p, PROMPT, ANSWERS[i % 3]) for i, p in enumerate(pictures(n, seed=1))]
    compute_features(model, spec, exs)
    collate = Collator(processor.tokenizer.pad_token_id)
    batches = [collate([dict(e) for e in exs[i : i + args.batch]]) for i in range(0, n, args.batch)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    def step(inputs, fused: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_has_bf16()), disable_input_dtype_casting(model), \
                fused_lora(model, fused):
            loss = answer_loss(model, spec, inputs)[0]
        loss.backward()
        opt.step()
        opt.zero_grad()
        return time.perf_counter() - start

    runs = {"PEFT": [], "fused": []}
    for name in runs:  # warm-up
        step(batches[0], name == "fused")
    for r, inputs in enumerate(batches[1:]):
        for name in (runs if r % 2 == 0 else list(runs)[::-1]):
            runs[name].append(step(inputs, name == "fused"))
    results = {"train s/step": {k: stats(v) for k, v in runs.items()},
               "ratio of medians": statistics.median(runs["PEFT"]) / statistics.median(runs["fused"]),
               "agreement": agreement(model, spec, batches[0]),
               "meta": {"torch": torch.__version__, "threads": torch.get_num_threads(), "bf16": cpu_has_bf16(),
                        "batch": args.batch, "rounds": args.rounds}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
