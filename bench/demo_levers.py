"""Three levers of the demo's wall time, each measured on/off side by side in one process.

    python bench/demo_levers.py [--rounds 3] [--out bench/results/demo_levers_cpu.json]

- ``encode``: encoding one training row (picture + prompt + answer) of the embedded default, as it
  is now and with the ``tokenizer.get_vocab()`` call per row that the default's end-of-turn hook
  made before (a 49k-entry dict built for one membership test).
- ``batch``: seconds per training sample at batch 8, 16 and 32 on the same pictures, set up as
  ``fit`` trains (frozen weights bf16 where the CPU has bf16, feature cache, eager attention,
  no PEFT input casts, LoRA r16 on the LM + projector, answer-only loss, AdamW).
- ``generate``: 16 answers (24 new tokens at most, batch 16) from a LoRA model with bf16 base
  weights, unmerged as ``vlmtune train`` evaluates it, and merged into the bf16 weights (PEFT's
  ``merge_and_unload``): faster, but the merge rounds the update to bf16, so answers can change.
  Not adopted (bench/README.md).

Variants alternate round by round; min and median are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from peft.helpers import disable_input_dtype_casting
from PIL import Image

from vlmtune.config import EvalConfig, LoraConfig, ModelConfig
from vlmtune.evaluation.generate import generate_answers
from vlmtune.models.dtype import cpu_has_bf16, keep_fp32_masters
from vlmtune.models.loading import load_model
from vlmtune.models.lora import apply_plan, plan_for
from vlmtune.models.merge import merged_model
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.training.collate import Collator
from vlmtune.training.features import compute_features, unwrap
from vlmtune.training.trainer import answer_loss

HERE = Path(__file__).resolve().parent
PROMPT = "Describe this picture in a few words."
ANSWERS = ["a white rook", "a black knight and a white pawn", "a black rook, a black bishop and a white bishop"]
LORA = LoraConfig(targets="lm+projector", r=16, alpha=32, dropout=0.0)


def pictures(n: int, seed: int = 0) -> list[Image.Image]:
    gen = torch.Generator().manual_seed(seed)
    return [Image.fromarray((torch.rand(224, 224, 3, generator=gen) * 255).byte().numpy()) for _ in range(n)]


def stats(times: list[float], per: int = 1) -> dict:
    return {"min": min(times) / per, "median": statistics.median(times) / per, "n": len(times)}


def bench_encode(processor, spec, rounds: int) -> dict:
    enc = PromptAnswerTokenizer(processor, spec, 256)
    pics = pictures(32)
    runs = {"now": [], "get_vocab per row (before)": []}
    for _ in range(rounds):
        for name in runs:
            start = time.perf_counter()
            for i, p in enumerate(pics):
                if name != "now":
                    "<|END_OF_TURN_TOKEN|>" in enc.tokenizer.get_vocab()  # noqa: B015 - what the hook did
                enc.encode(p, PROMPT, ANSWERS[i % 3])
            runs[name].append(time.perf_counter() - start)
    return {name: stats(t, len(pics)) for name, t in runs.items()}


def trained_model(model, spec, dtype):
    model = apply_plan(model, spec, plan_for(spec, LORA))
    keep_fp32_masters(model, dtype)
    unwrap(model).set_attn_implementation("eager")  # what fit trains with on a CPU
    return model


def bench_batch(model, processor, spec, rounds: int, sizes=(8, 16, 32)) -> dict:
    enc = PromptAnswerTokenizer(processor, spec, 256)
    per_round = max(sizes)
    exs = [enc.encode(p, PROMPT, ANSWERS[i % 3]) for i, p in enumerate(pictures(per_round * (rounds + 1), seed=1))]
    compute_features(model, spec, exs)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    collate = Collator(processor.tokenizer.pad_token_id)

    def step(batch: list[dict]) -> float:
        inputs = collate([dict(e) for e in batch])
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_has_bf16()), disable_input_dtype_casting(model):
            loss = answer_loss(model, spec, inputs)[0]
        loss.backward()
        opt.step()
        opt.zero_grad()
        return time.perf_counter() - start

    model.train()
    for size in sizes:  # warm-up: one step of each shape
        step(exs[:size])
    runs = {size: [] for size in sizes}
    for r in range(1, rounds + 1):
        chunk = exs[r * per_round : (r + 1) * per_round]
        for size in sizes:
            runs[size] += [step(chunk[i : i + size]) / size for i in range(0, per_round, size)]
    return {f"batch {size}": stats(t) for size, t in runs.items()}


def bench_generate(model, processor, spec, rounds: int) -> dict:
    torch.manual_seed(0)
    with torch.no_grad():  # a trained-looking adapter: B starts at zero, which would change nothing
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)
    model.eval()
    pics, cfg = pictures(16, seed=2), EvalConfig(batch_size=16, max_new_tokens=24)

    def timed(m) -> tuple[float, list[str]]:
        start = time.perf_counter()
        answers = generate_answers(m, processor, spec, pics, [PROMPT] * len(pics), cfg, desc="generating")
        return time.perf_counter() - start, answers

    unmerged = [timed(model) for _ in range(rounds)]
    plain = merged_model(model)  # in place: the unmerged runs come first
    merged = [timed(plain) for _ in range(rounds)]
    same = sum(a == b for a, b in zip(unmerged[-1][1], merged[-1][1]))
    return {"unmerged LoRA (as evaluated)": stats([t for t, _ in unmerged]), "merged into bf16": stats([t for t, _ in merged]),
            "same answers": f"{same} of {len(pics)}"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "demo_levers_cpu.json")
    args = ap.parse_args()
    model, processor, spec, dtype = load_model(ModelConfig(name="default"), training=True, bf16="auto")
    results = {"encode s/row": bench_encode(processor, spec, args.rounds)}
    model = trained_model(model, spec, dtype)
    results["train s/sample"] = bench_batch(model, processor, spec, args.rounds)
    unwrap(model).set_attn_implementation("sdpa")  # generation runs with the loaded kernel
    results["generate s (16 answers)"] = bench_generate(model, processor, spec, args.rounds)
    results["meta"] = {"torch": torch.__version__, "threads": torch.get_num_threads(), "bf16": cpu_has_bf16()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
