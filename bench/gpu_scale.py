"""Beyond one GPU, on one H200 (issue 11): planner vs measured peaks, accelerate smoke runs, QLoRA 7B.

    python bench/gpu_scale.py                 # CUDA; ~8 min on one H200; writes bench/results/gpu_scale.json
    python bench/gpu_scale.py --dry-run       # CPU: plans and encodes the batches, checks the commands

1. ``vlmtune plan``'s estimate against ``torch.cuda.max_memory_allocated`` for two shapes that
   bench/results/gpu_check_h200.json does not have, random bf16 weights built on the GPU, 3 steps
   through vlmtune's own ``fit`` (HF Trainer, bf16 autocast, fused AdamW):
   - next7b: LLaVA-NeXT-Mistral-7B, LoRA lm+vision+projector + gradient checkpointing, batch 2,
     672 x 672 pictures (2,928 image tokens each: also checks the planner's token count);
   - llava13b: LLaVA-1.5-13B, LoRA lm+projector (feature cache), no checkpointing, batch 4.
2. ``accelerate launch`` smoke runs of ``vlmtune train`` on the tiny LLaVA: 1-GPU DDP
   (configs/accelerate/ddp.yaml), and 1-GPU FSDP (fsdp.yaml) with a checkpoint, ``--resume`` from it,
   and the complete-checkpoint check on the FSDP layout.
3. QLoRA (model.quantization=4bit, NF4) on the LLaVA-1.5-7B shape: a random bf16 checkpoint written
   once to --work, loaded by ``load_model`` (vision tower / projector / LM head kept bf16), 3 steps
   with checkpointing; peak against the plan. Needs bitsandbytes: carry the wheel (43 MB), e.g.
   ``pip download bitsandbytes --no-deps -d wheels/`` here, ``pip install --no-deps wheels/*.whl`` there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from PIL import Image  # noqa: E402

from gpu_common import Recorder, word_tokenizer  # noqa: E402
import tiny  # noqa: E402
from vlmtune.config import load_config  # noqa: E402
from vlmtune.models.memory import GiB  # noqa: E402
from vlmtune.models.planner import workload  # noqa: E402
from vlmtune.models.prompting import PromptAnswerTokenizer  # noqa: E402
from vlmtune.models.registry import family_for  # noqa: E402
from vlmtune.models.shapes import ASSETS, model_shape  # noqa: E402
from vlmtune.training.checkpoints import checkpoint_problem  # noqa: E402

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ANSWERS = ["a white rook", "a black knight and a white pawn", "a white queen", "a black king and a black pawn"]
SHAPES = {  # name -> (shipped config, targets, batch, picture size, extra overrides)
    "next7b": ("llava-next-mistral-7b", "lm+vision+projector", 2, (672, 672), ["train.gradient_checkpointing=true"]),
    "llava13b": ("llava-1.5-13b", "lm+projector", 4, (640, 480), []),
}


def build(name: str, layers: int = 0):
    """(model on DEV with random bf16 weights, processor with a word-level tokenizer, spec, config)."""
    import transformers
    from transformers import AutoConfig, AutoImageProcessor

    folder = ASSETS / SHAPES[name][0]
    config = AutoConfig.from_pretrained(folder)
    tok = word_tokenizer()
    config.image_token_id = tok.convert_tokens_to_ids("<image>")
    if layers:  # --dry-run on a CPU: real widths, two layers
        config.text_config.num_hidden_layers = config.vision_config.num_hidden_layers = layers
    spec = family_for(config.model_type)
    processor_cls = getattr(transformers, "LlavaNextProcessor" if config.model_type == "llava_next" else "LlavaProcessor")
    settings = json.loads((folder / "processor_config.json").read_text())
    processor = processor_cls(AutoImageProcessor.from_pretrained(folder), tok, patch_size=settings["patch_size"],
                              vision_feature_select_strategy=settings["vision_feature_select_strategy"],
                              num_additional_image_tokens=settings["num_additional_image_tokens"], image_token="<image>")
    processor.chat_template = spec.fallback_template(config, tok)
    model = None
    if DEV.type == "cuda":
        torch.manual_seed(0)
        with DEV:
            model = getattr(transformers, spec.model_class)._from_config(config, dtype=torch.bfloat16,
                                                                         attn_implementation="sdpa")
    return model, processor, spec, config


def examples(processor, spec, n: int, size) -> list[dict]:
    enc = PromptAnswerTokenizer(processor, spec, 8192)
    gen = torch.Generator().manual_seed(0)
    pics = [Image.fromarray((torch.rand(size[1], size[0], 3, generator=gen) * 255).byte().numpy()) for _ in range(n)]
    return [enc.encode(p, "Describe this picture in a few words.", ANSWERS[i % 4]) for i, p in enumerate(pics)]


def plan_for(name: str, exs: list[dict], batch: int):
    shipped, targets, _, _, extra = SHAPES[name]
    cfg = load_config(overrides=[f"model.name={shipped}", f"train.lora.targets={targets}", f"train.batch_size={batch}",
                                 "data.max_length=8192", "train.max_steps=3", "train.save_steps=-1",
                                 "train.eval_each_epoch=false", "train.warmup_ratio=0", "train.logging_steps=1", *extra])
    shape = model_shape(cfg.model, cfg.train.lora)
    longest = max(len(e["input_ids"]) for e in exs)
    answers = sum(sum(1 for x in e["labels"] if x != -100) for e in exs) // len(exs)
    return cfg, shape, replace(workload(cfg, shape), seq=longest, answer_tokens=answers)


def check_shape(name: str, record: Recorder, dry: bool) -> None:
    from vlmtune.models.memory import layout
    from vlmtune.models.resolution import image_tokens_in
    from vlmtune.training.fit import fit

    _, _, batch, size, _ = SHAPES[name]
    model, processor, spec, _ = build(name, layers=2 if dry else 0)
    exs = examples(processor, spec, 3 * batch, size)
    cfg, shape, w = plan_for(name, exs, batch)
    planned = layout(shape, w, "single", 1).total / GiB
    tokens = image_tokens_in(processor, exs[0]["input_ids"])
    values = {"planned_gib": round(planned, 2), "seq": w.seq, "image_tokens": tokens,
              "planned_image_tokens": shape.picture.lm, "batch": batch, "targets": cfg.train.lora.targets,
              "checkpointing": w.checkpointing}
    if model is not None:
        torch.cuda.reset_peak_memory_stats()
        with tempfile.TemporaryDirectory() as tmp:
            result = fit(model, spec, torch.bfloat16, exs, None, cfg, tmp, processor.tokenizer.pad_token_id)
        measured = torch.cuda.max_memory_allocated() / GiB
        values.update(measured_gib=round(measured, 2), error_pct=round(100 * (planned - measured) / measured, 1),
                      losses=[h["loss"] for h in result.log_history if "loss" in h])
        del model, result
        torch.cuda.empty_cache()
    record(f"plan_vs_measured_{name}", **values)


def launch(args: list[str], out: Path, timeout: int = 300) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    (out.parent / f"{out.name}.log").write_text(done.stdout + done.stderr)
    return {"rc": done.returncode, "seconds": round(time.perf_counter() - start, 1), "tail": (done.stdout + done.stderr)[-600:]}


def smoke_runs(record: Recorder, work: Path, dry: bool) -> None:
    model_dir = tiny.save_llava(work / "tiny-llava")
    data = tiny.caption_folder(work / "tiny-data", n=12)
    accelerate = str(Path(sys.executable).parent / "accelerate")
    common = [f"model.name={model_dir}", f"data.path={data}", "data.prompt=describe this picture", "train.batch_size=2",
              "train.eval_each_epoch=false", "eval.max_new_tokens=4", "train.logging_steps=1"]
    runs = {
        "ddp": [accelerate, "launch", "--config_file", "configs/accelerate/ddp.yaml", "--num_processes", "1", "-m",
                "vlmtune", "train", f"output_dir={work / 'ddp'}", "train.max_steps=3", "train.save_steps=-1", *common],
        "fsdp": [accelerate, "launch", "--config_file", "configs/accelerate/fsdp.yaml", "--num_processes", "1", "-m",
                 "vlmtune", "train", f"output_dir={work / 'fsdp'}", "train.max_steps=4", "train.save_steps=2",
                 "train.feature_cache=false", *common],
    }
    # The run finished at step 4; --resume with more steps continues from checkpoint-4 (FSDP layout).
    runs["fsdp_resume"] = [*(a if a != "train.max_steps=4" else "train.max_steps=6" for a in runs["fsdp"]), "--resume"]
    for name, command in runs.items():
        if dry:
            record(f"smoke_{name}", command=" ".join(command))
            continue
        values = launch(command, work / name)
        run_dir = work / ("fsdp" if name.startswith("fsdp") else name)
        values["metrics"] = (run_dir / "metrics.json").is_file()
        checkpoints = sorted((run_dir / "checkpoints").glob("checkpoint-*"))
        values["checkpoints"] = {c.name: {"files": sorted(p.name for p in c.iterdir()), "problem": checkpoint_problem(c)}
                                 for c in checkpoints}
        record(f"smoke_{name}", **values)


def qlora_7b(record: Recorder, work: Path, dry: bool) -> None:
    import importlib.util

    from vlmtune.models.memory import layout

    if importlib.util.find_spec("bitsandbytes") is None and not dry:
        record("qlora_7b", skipped="bitsandbytes is not installed (carry the wheel, see the docstring)")
        return
    name = "llava-1.5-7b"
    cfg = load_config(overrides=[f"model.name={name}", "train.lora.targets=lm", "model.quantization=4bit",
                                 "train.gradient_checkpointing=true", "train.batch_size=4", "data.max_length=8192",
                                 "train.max_steps=3", "train.save_steps=-1", "train.eval_each_epoch=false",
                                 "train.logging_steps=1"])
    shape = model_shape(cfg.model, cfg.train.lora)
    if dry:
        record("qlora_7b", planned_gib=round(layout(shape, replace(workload(cfg, shape), seq=640), "single", 1).total
                                             / GiB, 2), dry_run=True)
        return
    import transformers
    from transformers import AutoConfig, CLIPImageProcessor, LlavaProcessor

    from vlmtune.models.default import CHAT_TEMPLATE
    from vlmtune.models.dtype import quantized_under, unquantized_prefixes
    from vlmtune.models.loading import load_model
    from vlmtune.training.fit import fit

    folder = work / "llava-7b-random"
    if not (folder / "config.json").is_file():
        config = AutoConfig.from_pretrained(ASSETS / name)
        config.image_token_id = tiny.VOCAB["<image>"]
        torch.manual_seed(0)
        with DEV:
            model = transformers.LlavaForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(folder)
        LlavaProcessor(image_processor=CLIPImageProcessor.from_pretrained(ASSETS / name), tokenizer=tiny.tokenizer(),
                       patch_size=14, vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                       num_additional_image_tokens=1).save_pretrained(folder)
        del model
        torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    cfg.model.name = str(folder)
    model, processor, spec, dtype = load_model(cfg.model, training=True)
    exs = examples(processor, spec, 12, (640, 480))
    w = replace(workload(cfg, shape), seq=max(len(e["input_ids"]) for e in exs),
                answer_tokens=sum(sum(1 for x in e["labels"] if x != -100) for e in exs) // len(exs))
    leaked = quantized_under(model, unquantized_prefixes(spec))
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(model, spec, dtype, exs, None, cfg, tmp, processor.tokenizer.pad_token_id)
    measured = torch.cuda.max_memory_allocated() / GiB
    planned = layout(shape, w, "single", 1).total / GiB
    record("qlora_7b", planned_gib=round(planned, 2), measured_gib=round(measured, 2),
           error_pct=round(100 * (planned - measured) / measured, 1), quantized_where_kept=len(leaked),
           losses=[h["loss"] for h in result.log_history if "loss" in h], seq=w.seq)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/gpu_scale.json")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vlmtune-gpu-scale")
    parser.add_argument("--dry-run", action="store_true", help="CPU: plans, token counts, commands; nothing trains")
    parser.add_argument("--skip", default="", help="comma list of: next7b, llava13b, smoke, qlora")
    args = parser.parse_args(argv)
    dry = args.dry_run or DEV.type != "cuda"
    skip = set(filter(None, args.skip.split(",")))
    record = Recorder(args.out)
    record("env", device=torch.cuda.get_device_name(0) if DEV.type == "cuda" else "cpu", torch=torch.__version__,
           transformers=__import__("transformers").__version__, dry_run=dry)
    args.work.mkdir(parents=True, exist_ok=True)
    for name in SHAPES:
        if name not in skip:
            check_shape(name, record, dry)
    if "smoke" not in skip:
        smoke_runs(record, args.work, dry)
    if "qlora" not in skip:
        qlora_7b(record, args.work, dry)
    if not dry:
        shutil.rmtree(args.work / "llava-7b-random", ignore_errors=True)
    print("done")


if __name__ == "__main__":
    main()
