"""Training speed and memory against what users pick instead, side by side in one run.

    python bench/speed.py [--repeats 2] [--steps 5] [--only ours,trl-conv,...]
    # writes bench/results/speed_cpu.json and .md (needs trl: pip install -e ".[bench]")

Variants (each in its own process, so peak RSS is its own; repeats alternate the order):
- B0 ``ours``: vlmtune's ``fit`` on the embedded default (feature cache, LM head on answer positions,
  frozen weights bf16) and its levers switched off one at a time: ``ours-fp32`` (frozen weights
  fp32), ``ours-nocache`` (pixels through DINOv2 every step), ``ours-llava`` (the old LLaVA layout:
  145 image tokens a picture instead of 64), ``ours-sdpa`` (SDPA attention in training instead of
  eager on a CPU), ``ours-casts`` (PEFT's fp32 round trip of every LoRA input under autocast), ``ours-nofuse``
  (PEFT's own LoRA forward instead of the update inside its addmm, ``training/fused_lora.py``);
  ``ours-t36`` / ``ours-t16`` set ``model.max_image_tokens`` (168 / 112 px instead of 224: 36 / 16
  image tokens); ``ours-gc`` adds activation checkpointing (with the
  feature cache only the LM's decoder layers run, so it checkpoints those alone).
- B1 ``trl-conv`` / ``trl-pc``: TRL ``SFTTrainer`` with its defaults (vision collator, gradient
  checkpointing on, bf16), conversational messages (every token supervised) or prompt/completion
  (prompt masked); the same LoRA (r16 on the LM's 7 projections, regex-scoped) + projector whole.
- B2 ``seed``: the seed's loop, a plain HF ``Trainer`` whose collator runs the processor on each
  sample, labels = input_ids with prompt and padding masked, logits at every position.
- ``eval``: batched generation vs one picture at a time; ``prep``: photo conversion, 1 vs 2 workers.

A step's time is the wall time between two ``on_step_end`` callbacks (data loading included); the
first step is warm-up. FLOPs are counted from the model's shapes (``step_flops``), MFU against a
bf16 matmul measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PROMPT = "Describe this picture in a few words."
LM_LEAVES = "q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj"
TRAIN_VARIANTS = ("ours", "ours-sdpa", "ours-casts", "ours-nofuse", "ours-t36", "ours-t16", "ours-fp32", "ours-nocache",
                  "ours-llava", "ours-gc", "trl-conv", "trl-pc", "seed")


# ---------------------------------------------------------------- shared set-up
def base_path(layout: str) -> str:
    from vlmtune.models.default import ASSETS, ensure_default_base

    if layout == "llava":
        return str(ensure_default_base(projector=ASSETS / "default_projector-llava.safetensors"))
    return str(ensure_default_base())


def rows(n_train: int, n_test: int):
    """The first train / test rows of the 400-picture chess set the demo used until it went to 800
    (the tables here were measured on it); synthesised into the cache on first use."""
    from vlmtune.data.dataset import build_dataset
    from vlmtune.stages.demo import chess_data

    data = build_dataset(chess_data(400, 224, 0, 48 / 400), PROMPT)
    return data["train"].select(range(n_train)), data["test"].select(range(n_test))


def rss_mb() -> tuple[int, int]:
    """(resident now, peak so far) of this process, MB."""
    now = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
    return now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


class StepTimer:
    """Wall time between consecutive optimizer steps (``on_step_end``), data loading included; RSS
    (now, peak) when training starts and after each step, to see where the peak comes from."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                timer.rss.append(rss_mb())
                timer.last = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                now = time.perf_counter()
                timer.steps.append(now - timer.last)
                timer.rss.append(rss_mb())
                timer.last = time.perf_counter()

        self.steps: list[float] = []
        self.rss: list[tuple[int, int]] = []
        self.callback = _Callback()


def answer_tokens(tokenizer, train, batch: int) -> float:
    """Answer tokens + end of turn per sample: the positions whose logits an answer-only loss needs."""
    return statistics.mean(len(tokenizer(r["answer"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"])
                           for r in train.select(range(batch)))


def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=rf"model\.language_model\..*\.({LM_LEAVES})",
                      modules_to_save=["multi_modal_projector"], task_type="CAUSAL_LM")


# ---------------------------------------------------------------- B0: ours
def run_ours(variant: str, steps: int, batch: int, n: int) -> dict:
    from vlmtune.config import ModelConfig, load_config
    from vlmtune.models.loading import load_model
    from vlmtune.models.prompting import PromptAnswerTokenizer
    from vlmtune.training.fit import encode_split, fit

    layout = "llava" if variant == "ours-llava" else "aya"
    overrides = ["train.lora.targets=lm+projector", "train.lora.r=16", "train.lora.alpha=32", "train.lora.dropout=0",
                 f"train.batch_size={batch}", f"train.max_steps={steps + 1}", "train.lr=3e-4", "train.projector_lr=1e-3",
                 "train.logging_steps=1", "train.save_steps=-1", "train.eval_each_epoch=false"]
    overrides += {"ours-fp32": ["model.dtype=fp32"], "ours-nocache": ["train.feature_cache=false"],
                  "ours-gc": ["train.gradient_checkpointing=true"], "ours-sdpa": ["model.attn_implementation=sdpa"],
                  "ours-t36": ["model.max_image_tokens=36"], "ours-t16": ["model.max_image_tokens=16"]}.get(variant, [])
    # Levers with no config switch are turned off by replacing fit's context manager with a no-op:
    # ours-nofuse keeps PEFT's base(x) + lora_B(lora_A(x)) * scaling; ours-casts keeps PEFT's cast
    # of every LoRA input to fp32, which autocast casts straight back.
    lever_off = {"ours-nofuse": "fused_lora", "ours-casts": "disable_input_dtype_casting"}.get(variant)
    if lever_off:
        import contextlib

        import vlmtune.training.fit as fit_module

        setattr(fit_module, lever_off, lambda model, active=True: contextlib.nullcontext())
    cfg = load_config(overrides=[f"model.name={base_path(layout)}", *overrides])
    train, _ = rows(n, 0)
    model, processor, spec, dtype = load_model(cfg.model, training=True, bf16=cfg.train.bf16)
    encoder = PromptAnswerTokenizer(processor, spec, cfg.data.max_length)
    timer = StepTimer()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = fit(model, spec, dtype, encode_split(encoder, train, "train"), None, cfg, out,
                     processor.tokenizer.pad_token_id, callbacks=(timer.callback,))
    wall = time.perf_counter() - start
    tokens = [len(encoder.encode(r["image"], r["prompt"], r["answer"])["input_ids"]) for r in train.select(range(batch))]
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    return {"steps": timer.steps, "rss_mb": timer.rss, "fit_wall_s": wall, "tokens_per_sample": statistics.mean(tokens),
            "first_loss": losses[0] if losses else None, "weights": str(dtype).removeprefix("torch."), "layout": layout,
            "answer_tokens": answer_tokens(processor.tokenizer, train, batch)}


# ---------------------------------------------------------------- B1: TRL SFTTrainer
def trl_dataset(train, fmt: str):
    from datasets import Dataset

    records = []
    for r in train:
        user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["prompt"]}]}
        assistant = {"role": "assistant", "content": [{"type": "text", "text": r["answer"]}]}
        if fmt == "conv":
            records.append({"messages": [user, assistant], "images": [r["image"]]})
        else:
            records.append({"prompt": [user], "completion": [assistant], "images": [r["image"]]})
    return Dataset.from_list(records)


def layout_of(variant: str) -> str:
    """Baselines on the default's old LLaVA layout (``-llava``): what the issue measured them on."""
    return "llava" if variant.endswith("-llava") else "aya"


def run_trl(variant: str, steps: int, batch: int, n: int) -> dict:
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    path = base_path(layout_of(variant))
    train, _ = rows(n, 0)
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(output_dir=out, per_device_train_batch_size=batch, max_steps=steps + 1, learning_rate=3e-4,
                         logging_steps=1, save_strategy="no", report_to="none", max_length=None, seed=0,
                         use_cpu=not torch.cuda.is_available())
        trainer = SFTTrainer(model=model, args=args, train_dataset=trl_dataset(train, variant.split("-")[1]),
                             processing_class=processor, peft_config=lora_config(), callbacks=[timer.callback])
        seen = []
        collate = trainer.data_collator
        trainer.data_collator = lambda feats: _count(collate(feats), seen)
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"steps": timer.steps, "rss_mb": timer.rss, "fit_wall_s": wall, "tokens_per_sample": statistics.mean(seen[0]),
            "first_loss": losses[0] if losses else None, "supervised_per_sample": statistics.mean(seen[1]),
            "gradient_checkpointing": args.gradient_checkpointing, "bf16": args.bf16, "layout": layout_of(variant),
            "answer_tokens": answer_tokens(processor.tokenizer, train, batch)}


def _count(batch: dict, seen: list) -> dict:
    if not seen:  # tokens and supervised labels per sample, from the first batch
        seen.append(batch["attention_mask"].sum(1).tolist())
        seen.append((batch["labels"] != -100).sum(1).tolist())
    return batch


# ---------------------------------------------------------------- B2: the seed's loop
class SeedCollator:
    """Per-sample processing in the collator, as the seed's tutorial loop: chat template, processor,
    labels = input_ids with the prompt and padding masked."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, examples: list[dict]) -> dict:
        tok = self.processor.tokenizer
        ids, labels, pixels = [], [], []
        for e in examples:
            user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": e["prompt"]}]}
            prompt = self.processor.apply_chat_template([user], add_generation_prompt=True)
            full = prompt + e["answer"] + tok.eos_token
            enc = self.processor(images=[e["image"]], text=[full], return_tensors="pt")
            n_prompt = len(self.processor(images=[e["image"]], text=[prompt])["input_ids"][0])
            lab = enc["input_ids"][0].clone()
            lab[:n_prompt] = -100
            ids.append(enc["input_ids"][0])
            labels.append(lab)
            pixels.append(enc["pixel_values"])
        pad = torch.nn.utils.rnn.pad_sequence
        input_ids = pad(ids, batch_first=True, padding_value=tok.pad_token_id)
        return {"input_ids": input_ids, "attention_mask": (input_ids != tok.pad_token_id).long(),
                "labels": pad(labels, batch_first=True, padding_value=-100), "pixel_values": torch.cat(pixels)}


def run_seed(variant: str, steps: int, batch: int, n: int) -> dict:
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer, TrainingArguments

    path = base_path(layout_of(variant))
    train, _ = rows(n, 0)
    model = get_peft_model(AutoModelForImageTextToText.from_pretrained(path), lora_config())
    processor = AutoProcessor.from_pretrained(path)
    timer = StepTimer()
    seen = []
    collate = SeedCollator(processor)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch, max_steps=steps + 1,
                                 learning_rate=3e-4, logging_steps=1, save_strategy="no", report_to="none",
                                 bf16=True, remove_unused_columns=False, seed=0, use_cpu=not torch.cuda.is_available())
        trainer = Trainer(model=model, args=args, train_dataset=list(train), data_collator=lambda f: _count(collate(f), seen),
                          callbacks=[timer.callback])
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"steps": timer.steps, "rss_mb": timer.rss, "fit_wall_s": wall, "tokens_per_sample": statistics.mean(seen[0]),
            "first_loss": losses[0] if losses else None, "layout": layout_of(variant),
            "answer_tokens": answer_tokens(processor.tokenizer, train, batch)}


# ---------------------------------------------------------------- evaluation and data prep
def run_eval(variant: str, steps: int, batch: int, n: int) -> dict:
    from vlmtune.config import DataConfig, EvalConfig, ModelConfig
    from vlmtune.evaluation.predictions import predict_split
    from vlmtune.models.loading import load_model

    _, test = rows(0, 16)
    out = {}
    # fp32: what `vlmtune evaluate` loads on a CPU; bf16: the weights `vlmtune train` evaluates with
    # (its training model), and a lever for inference.
    for dtype in ("fp32", "bf16"):
        model, processor, spec, _ = load_model(ModelConfig(name=base_path("aya"), dtype=dtype), training=False)
        for size in (16, 1):
            start = time.perf_counter()
            predict_split(model, processor, spec, test, EvalConfig(max_new_tokens=24, batch_size=size), DataConfig(),
                          "eval")
            out[f"{dtype}_batch_{size}_samples_per_s"] = len(test) / (time.perf_counter() - start)
    return out


def phone_photos(folder: Path, n: int = 8) -> Path:
    """12 MP JPEGs (4032x3024) with noise, as straight off a phone; made once per run."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        grad = np.linspace(0, 255, 4032, dtype=np.float32)[None, :, None]
        pixels = np.clip(grad + rng.normal(0, 25, (3024, 4032, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"IMG_{i:04d}.jpg", quality=92)
    return folder


def run_prep(variant: str, steps: int, batch: int, n: int) -> dict:
    from vlmtune.data.convert import ConvertOptions, convert_folder

    src = Path(os.environ["BENCH_PHOTOS"])
    out = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as dst:
            start = time.perf_counter()
            convert_folder(src, Path(dst) / "out", ConvertOptions(), workers=workers, progress=False)
            out[f"workers_{workers}_images_per_s"] = len(list(src.glob("*.jpg"))) / (time.perf_counter() - start)
    return out


RUNNERS = {**{v: run_ours for v in TRAIN_VARIANTS if v.startswith("ours")},
           "trl-conv": run_trl, "trl-pc": run_trl, "seed": run_seed,
           "trl-conv-llava": run_trl, "seed-llava": run_seed, "eval": run_eval, "prep": run_prep}


# ---------------------------------------------------------------- FLOPs and peak
def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 8) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start)


def step_flops(layout: str, variant: str, batch: int, tokens: float, answer: float) -> float:
    """FLOPs of one training step, counted from the shapes (see bench/README.md for the formula).

    Frozen linears need only their input's gradient, so the backward pass of the LM's matmuls costs
    one forward (2·P per token, not 4·P); attention's backward costs two. LoRA's own FLOPs (r=16)
    are under 6 % and left out. The LM head runs where logits are computed (answer positions for
    ours, every position for B1/B2); the vision tower runs forward only, every step unless cached.
    """
    from transformers import AutoConfig

    path = base_path(layout)
    cfg = AutoConfig.from_pretrained(path)
    image_size = json.loads((Path(path) / "vlmtune_base.json").read_text())["spec"]["image_size"]
    t, v = cfg.text_config, cfg.vision_config
    d, L, ff, hd = t.hidden_size, t.num_hidden_layers, t.intermediate_size, t.hidden_size // t.num_attention_heads
    dq, dkv = t.num_attention_heads * hd, t.num_key_value_heads * hd
    p_lin = L * (d * (dq + 2 * dkv) + dq * d + 3 * d * ff)
    attn_fwd = 2 * L * tokens * dq  # causal: QK^T and AV over half the sequence on average, per token
    per_token = 2 * p_lin * 2 + attn_fwd * 3
    head_positions = answer if variant.startswith("ours") else tokens
    head = 2 * t.vocab_size * d * head_positions * 2
    vision = 0.0
    if variant == "ours-nocache" or not variant.startswith("ours"):
        s = (image_size // v.patch_size) ** 2 + 1  # DINOv2 sees every patch + CLS in both layouts
        p_vis = v.num_hidden_layers * (4 * v.hidden_size**2 + 2 * v.hidden_size * v.intermediate_size)
        vision = 2 * p_vis * s + 4 * v.num_hidden_layers * s * s * v.hidden_size
    return batch * (per_token * tokens + head + vision)


# ---------------------------------------------------------------- the parent: run, aggregate, write
def child(variant: str, args) -> dict:
    env = dict(os.environ, BENCH_PHOTOS=str(args.photos))
    cmd = [sys.executable, __file__, "--child", variant, "--steps", str(args.steps), "--batch", str(args.batch),
           "--pictures", str(args.pictures)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(variant: str, runs: list[dict], args, peak: float) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"variant": variant, "error": runs[0]["error"]}
    if variant in ("eval", "prep"):
        return {"variant": variant, **{k: {"min": min(r[k] for r in ok), "median": statistics.median(r[k] for r in ok)}
                                       for k in ok[0] if k.endswith("_per_s")}}
    per_run = [statistics.median(r["steps"][1:]) for r in ok]  # steady state: warm-up step dropped
    step = statistics.median(per_run)
    first = ok[0]
    flops = step_flops(first["layout"], variant, args.batch, first["tokens_per_sample"], first["answer_tokens"])
    return {"variant": variant, "step_s": {"min": min(per_run), "median": step},
            "samples_per_s": args.batch / step, "tokens_per_s": args.batch * first["tokens_per_sample"] / step,
            "tokens_per_sample": first["tokens_per_sample"], "peak_rss_gb": max(r["peak_rss_kb"] for r in ok) / 2**20,
            "flops_per_step": flops, "mfu": flops / step / peak, "first_loss": first.get("first_loss"),
            "fit_wall_s": statistics.median(r["fit_wall_s"] for r in ok),
            **{k: first[k] for k in ("weights", "gradient_checkpointing", "supervised_per_sample") if k in first}}


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "cpu_threads": torch.get_num_threads(), "cpu": _cpu_name()}
    for pkg in ("torch", "transformers", "peft", "trl", "accelerate"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def markdown(results: list[dict], peak: float, meta: dict) -> str:
    by = {r["variant"]: r for r in results}
    # Baselines on the default's layout, else on the old LLaVA layout (a lever run: -llava variants).
    base = {k: next(by[v]["samples_per_s"] for v in (k, f"{k}-llava") if "samples_per_s" in by.get(v, {}))
            for k in ("trl-conv", "seed") if any("samples_per_s" in by.get(v, {}) for v in (k, f"{k}-llava"))}
    lines = [f"peak bf16 matmul: {peak / 1e9:.0f} GFLOP/s; {json.dumps(meta)}", "",
             "| variant | s/step (min / median) | samples/s | tokens/s | vs TRL conv | vs seed | peak RSS GB | MFU | first loss |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "samples_per_s" not in r:
            continue
        ratio = {k: f"{r['samples_per_s'] / v:.2f}x" for k, v in base.items()}
        lines.append(f"| {r['variant']} | {r['step_s']['min']:.2f} / {r['step_s']['median']:.2f} | {r['samples_per_s']:.2f} | "
                     f"{r['tokens_per_s']:.0f} | {ratio.get('trl-conv', '—')} | {ratio.get('seed', '—')} | "
                     f"{r['peak_rss_gb']:.2f} | {100 * r['mfu']:.1f} % | {r['first_loss'] or float('nan'):.3f} |")
    for r in results:
        if r["variant"] in ("eval", "prep") or "error" in r:
            lines.append(f"- {r['variant']}: " + json.dumps({k: v for k, v in r.items() if k != 'variant'}))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--pictures", type=int, default=40)
    ap.add_argument("--only", default=",".join((*TRAIN_VARIANTS, "eval", "prep")))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "speed_cpu")
    args = ap.parse_args()
    if args.child:
        result = RUNNERS[args.child](args.child, args.steps, args.batch, args.pictures)
        result["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps(result))
        return
    variants = args.only.split(",")
    base_path("aya"), base_path("llava"), rows(1, 1)  # build the caches outside the timed children
    with tempfile.TemporaryDirectory() as tmp:
        args.photos = phone_photos(Path(tmp) / "photos")
        runs: dict[str, list] = {v: [] for v in variants}
        for repeat in range(args.repeats):
            for v in variants if repeat % 2 == 0 else variants[::-1]:  # alternated: drift hits every variant
                runs[v].append(child(v, args))
                print(f"repeat {repeat + 1}: {v}: {json.dumps(runs[v][-1])[:300]}", flush=True)
    peak = matmul_peak(torch.bfloat16)
    results = [summarise(v, runs[v], args, peak) for v in variants]
    meta = {**versions(), "batch": args.batch, "timed_steps": args.steps, "repeats": args.repeats, "pictures": args.pictures,
            "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "peak_bf16_flops": peak, "results": results,
                                                         "runs": runs}, indent=1))
    table = markdown(results, peak, meta)
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
