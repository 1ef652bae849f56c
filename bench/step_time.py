"""Training step time of the embedded default model, variants side by side in one process.

    python bench/step_time.py [--steps 6] [--batch 8] [--variants a,b,...]

Each variant runs the same batches (synthetic chess-like answers on random pictures) through
``answer_loss`` + backward + AdamW step, after one warm-up step, and reports seconds per step and
the ratio to the stock path (pixels through the vision tower every step, logits for every position).
"""

from __future__ import annotations

import argparse
import time

import torch
from PIL import Image

from vlmtune.config import LoraConfig, ModelConfig
from vlmtune.training.collate import Collator
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.models.dtype import cpu_has_bf16
from vlmtune.models.lora import apply_plan
from vlmtune.models.loading import load_model
from vlmtune.training.features import compute_features
from vlmtune.training.trainer import answer_loss

ANSWERS = ["a white rook", "a black knight and a white pawn", "a black rook, a black bishop and a white bishop"]


def batches(processor, spec, n: int, batch: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    enc = PromptAnswerTokenizer(processor, spec, 256)
    pics = [Image.fromarray((torch.rand(96, 96, 3, generator=gen) * 255).byte().numpy()) for _ in range(n * batch)]
    exs = [enc.encode(p, "Describe this picture in a few words.", ANSWERS[i % 3]) for i, p in enumerate(pics)]
    return [exs[i * batch : (i + 1) * batch] for i in range(n)]


def stock_loss(model, inputs):
    """What a plain HF loop does: full forward with labels (logits at every position)."""
    return model(**inputs).loss


def run_variant(name: str, steps: int, batch: int, lora: LoraConfig, cached: bool, answer_only: bool, bf16: bool):
    torch.manual_seed(0)
    model, processor, spec, _ = load_model(ModelConfig(name="default"), training=True)
    groups = batches(processor, spec, steps + 1, batch)
    if cached:
        for g in groups:
            compute_features(model, spec, g)
    model = apply_plan(model, spec, lora)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    collate = Collator(processor.tokenizer.pad_token_id)
    times = []
    for g in groups:
        inputs = collate([dict(e) for e in g])
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = answer_loss(model, spec, inputs)[0] if answer_only else stock_loss(model, inputs)
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    per_step = sum(times[1:]) / steps  # first step is warm-up
    return name, per_step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--variants", default="stock,ours")
    args = ap.parse_args()
    bf16 = cpu_has_bf16()
    lm_proj = LoraConfig(targets="lm+projector", r=16, alpha=32, dropout=0.05)
    variants = {
        "stock": (lm_proj, False, False),  # pixels every step, logits everywhere
        "ours": (lm_proj, True, True),  # feature cache + answer-only logits
        "ours-nodrop": (LoraConfig(targets="lm+projector", r=16, alpha=32, dropout=0.0), True, True),
        "ours-r8": (LoraConfig(targets="lm+projector", r=8, alpha=16, dropout=0.05), True, True),
        "projector-only": (LoraConfig(targets="projector"), True, True),
    }
    results = [run_variant(v, args.steps, args.batch, *variants[v], bf16=bf16) for v in args.variants.split(",")]
    base = dict(results).get("stock")
    print(f"batch {args.batch}, {args.steps} timed steps, bf16 autocast {bf16}, threads {torch.get_num_threads()}")
    for name, t in results:
        ratio = f"{base / t:.2f}x vs stock" if base else ""
        print(f"{name:16} {t:6.2f} s/step  {ratio}")


if __name__ == "__main__":
    main()
