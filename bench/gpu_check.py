"""GPU checks at real 7B shape (random weights from the published LLaVA-1.5-7B config), bf16.

Run on a CUDA machine (see bench/README.md for how it was run); writes ``$OUT/gpu_check.json``:
- the dtype policy picks bf16 weights and no fp16; nothing is left in another dtype;
- a training step of the stock path (pixels through CLIP every step, logits everywhere) vs ours
  (vision features cached once, LM head on answer positions only), side by side;
- vision LoRA with gradient checkpointing through the real ``fit`` (HF Trainer) gets non-zero
  updates; peak memory; batched left-padded generation.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from PIL import Image  # noqa: E402

import tiny  # noqa: E402
from vlmtune.config import EvalConfig, load_config  # noqa: E402
from vlmtune.models.prompting import PromptAnswerTokenizer  # noqa: E402
from vlmtune.training.collate import Collator  # noqa: E402
from vlmtune.evaluation.generate import generate_answers  # noqa: E402
from vlmtune.models.default import CHAT_TEMPLATE  # noqa: E402
from vlmtune.models.dtype import attention_kernel, autocast_bf16, dtype_audit, weights_dtype  # noqa: E402
from vlmtune.models.lora import apply_plan, trainable_share  # noqa: E402
from vlmtune.models.registry import family_for  # noqa: E402
from vlmtune.training.features import compute_features  # noqa: E402
from vlmtune.training.fit import fit  # noqa: E402
from vlmtune.training.trainer import answer_loss  # noqa: E402

CONFIG_DIR = Path(os.environ.get("LLAVA_CONFIG", ROOT / "tests/data/model-configs/llava-hf__llava-1.5-7b-hf"))
OUT = Path(os.environ.get("OUT", "."))
RESULTS: dict = {}
DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# Dry runs on a CPU keep the real widths but only a few layers (LAYERS=2).
LAYERS = int(os.environ.get("LAYERS", "0"))


def sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def peak_gib() -> float:
    return round(torch.cuda.max_memory_allocated() / 2**30, 1) if DEV.type == "cuda" else 0.0


def reset_peak() -> None:
    if DEV.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def record(name: str, **values) -> None:
    RESULTS[name] = values
    print(name, json.dumps(values), flush=True)
    (OUT / "gpu_check.json").write_text(json.dumps(RESULTS, indent=1))


def build_7b():
    """LLaVA-1.5-7B from its real config, random bf16 weights built on the GPU, tiny tokenizer."""
    from transformers import AutoConfig, CLIPImageProcessor, LlavaForConditionalGeneration, LlavaProcessor

    cfg = AutoConfig.from_pretrained(CONFIG_DIR)
    cfg.image_token_id = tiny.VOCAB["<image>"]  # our word-level test tokenizer's image id
    if LAYERS:
        cfg.text_config.num_hidden_layers = cfg.vision_config.num_hidden_layers = LAYERS
    start = time.perf_counter()
    with DEV:
        model = LlavaForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    processor = LlavaProcessor(image_processor=CLIPImageProcessor.from_pretrained(CONFIG_DIR), tokenizer=tiny.tokenizer(),
                               patch_size=14, vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                               num_additional_image_tokens=1)  # CLS, as in its processor_config.json
    return model.eval(), processor, time.perf_counter() - start


def examples(processor, spec, n: int):
    enc = PromptAnswerTokenizer(processor, spec, 1024)
    sizes = [(640, 480), (480, 640), (336, 336), (1024, 768)]
    answers = ["a white rook", "a black knight and a white pawn", "a white queen", "a black king and a black pawn"]
    gen = torch.Generator().manual_seed(0)
    pics = [Image.fromarray((torch.rand(h, w, 3, generator=gen) * 255).byte().numpy()) for w, h in sizes]
    return [enc.encode(pics[i % 4], "Describe this picture in a few words.", answers[i % 4]) for i in range(n)]


def timed_steps(model, spec, batches, stock: bool, steps: int = 3) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    times = []
    for i in range(steps + 1):
        inputs = {k: v.to(DEV) for k, v in batches[i % len(batches)].items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
        sync()
        start = time.perf_counter()
        loss = model(**inputs).loss if stock else answer_loss(model, spec, inputs)[0]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - start)
        assert torch.isfinite(loss), loss
    return sum(times[1:]) / steps


def check_policy() -> None:
    name = torch.cuda.get_device_name(0) if DEV.type == "cuda" else "cpu"
    record("env", torch=torch.__version__, device=name, bf16=DEV.type == "cuda" and torch.cuda.is_bf16_supported(),
           transformers=__import__("transformers").__version__, peft=__import__("peft").__version__)
    record("policy", weights=str(weights_dtype("auto", DEV, training=True)),
           autocast_on_bf16_weights=autocast_bf16("auto", DEV, torch.bfloat16), attention=attention_kernel("auto", DEV))


def check_stock_vs_ours(batch: int = 4) -> None:
    model, processor, build_s = build_7b()
    spec = family_for(model.config.model_type)
    record("build_7b", seconds=round(build_s, 1), params=sum(p.numel() for p in model.parameters()),
           audit=dtype_audit(model, torch.bfloat16))
    exs = examples(processor, spec, batch * 2)
    collate = Collator(processor.tokenizer.pad_token_id)
    pixel_batches = [collate(exs[i : i + batch]) for i in range(0, len(exs), batch)]
    model = apply_plan(model, spec, load_config(overrides=["train.lora.targets=lm+projector"]).train.lora)
    trainable, total = trainable_share(model)
    model.train()
    reset_peak()
    stock = timed_steps(model, spec, pixel_batches, stock=True)
    stock_mem = peak_gib()
    cached = [dict(e) for e in exs]
    start = time.perf_counter()
    compute_features(model, spec, cached, batch_size=8)
    feature_s = time.perf_counter() - start
    cached_batches = [collate(cached[i : i + batch]) for i in range(0, len(cached), batch)]
    reset_peak()
    ours = timed_steps(model, spec, cached_batches, stock=False)
    record("step_7b_lm+projector", batch=batch, seq=len(exs[0]["input_ids"]), trainable_share=round(trainable / total, 4),
           stock_s=round(stock, 3), ours_s=round(ours, 3), speedup=round(stock / ours, 2),
           feature_cache_s_per_image=round(feature_s / len(cached), 4), stock_peak_gib=stock_mem, ours_peak_gib=peak_gib())
    model.eval()
    pics = [Image.new("RGB", (500, 375), (200, 30, 30)), Image.new("RGB", (300, 400), (30, 30, 200))]
    start = time.perf_counter()
    out = generate_answers(model, processor, spec, pics, ["Describe this picture.", "What is this"], EvalConfig(max_new_tokens=8, batch_size=2))
    record("generate_7b", seconds=round(time.perf_counter() - start, 2), answers=out)


def check_vision_lora_with_checkpointing(tmp: Path) -> None:
    model, processor, _ = build_7b()
    spec = family_for(model.config.model_type)
    cfg = load_config(overrides=["train.lora.targets=lm+vision+projector", "train.gradient_checkpointing=true",
                                 "train.max_steps=3", "train.batch_size=4", "train.lr=1e-3", "train.save_steps=-1",
                                 "train.logging_steps=1", "train.eval_each_epoch=false", "train.warmup_ratio=0"])
    reset_peak()
    result = fit(model, spec, torch.bfloat16, examples(processor, spec, 12), None, cfg, str(tmp), processor.tokenizer.pad_token_id)
    vision_b = [p for n, p in result.model.named_parameters() if "vision_tower" in n and "lora_B" in n]
    moved = sum(int(p.abs().sum().item() > 0) for p in vision_b)
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    record("fit_7b_vision_lora_gc", vision_lora_b=len(vision_b), vision_lora_b_updated=moved, losses=losses,
           seconds=round(result.seconds, 1), trainable_share=round(result.trainable / result.total, 4),
           peak_gib=peak_gib())


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    check_policy()
    check_stock_vs_ours()
    if DEV.type == "cuda":
        torch.cuda.empty_cache()
    check_vision_lora_with_checkpointing(OUT / "fit")
    print("done")
