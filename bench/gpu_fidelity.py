"""bf16 training fidelity and QLoRA at the LLaVA-NeXT-Mistral-7B shape (random bf16 weights); issue 8, items 1-2.

One command on a CUDA machine (a few minutes on one H200), results in bench/results/gpu_fidelity.json:

    python bench/gpu_fidelity.py

Everything goes through vlmtune's own path: a random bf16 checkpoint at the published shape is
saved once, then ``load_model`` + ``fit`` (HF Trainer) run 3 steps of lm+projector at the shipped
``projector_lr=2e-5`` on the same 4 pictures and seed, in these variants:
- ``bf16``: bf16 weights, fp32 masters for the projector and image_newline, bf16 autocast (ours);
- ``ref_amp``: fp32 weights (the same values) under bf16 autocast: an all-fp32-master reference;
- ``ref_fp32``: fp32 weights, plain fp32 compute;
- ``no_masters``: bf16 weights with the masters switched off and no autocast (the code before);
- ``qlora``: ``model.quantization=4bit`` (bitsandbytes), ``train.optim=paged_adamw_8bit``.
Reported: the projector's and image_newline's update (norm ratio, relative L2 difference) against
the references; for QLoRA the number of 4-bit linears under the vision tower / projector / LM head
(must be 0), their dtypes (bf16, no fp32 upcast), that LoRA and the projector moved; peak VRAM
for LoRA (bf16) and QLoRA.

Without a GPU: ``--dry-run`` builds the real shape on the meta device, checks the QLoRA skip list
with transformers' own matcher and encodes the batches (seconds, CPU); ``--shrink`` runs every
check but QLoRA end to end at a tiny width on the CPU (a minute).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from PIL import Image  # noqa: E402

from gpu_common import Recorder, word_tokenizer  # noqa: E402
import vlmtune.training.fit as fit_module  # noqa: E402
from vlmtune.config import ModelConfig, load_config  # noqa: E402
from vlmtune.models.dtype import quantized_under, unquantized_prefixes  # noqa: E402
from vlmtune.models.families.llava import LLAVA_NEXT  # noqa: E402
from vlmtune.models.loading import load_model  # noqa: E402
from vlmtune.models.prompting import PromptAnswerTokenizer  # noqa: E402

CONFIG_DIR = ROOT / "tests/data/model-configs/llava-hf__llava-v1.6-mistral-7b-hf"
DEV = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
WATCHED = {"projector": "model.multi_modal_projector.", "image_newline": "model.image_newline"}
ANSWERS = ["a white rook", "a black knight and a white pawn", "a white queen", "a black king and a black pawn"]
SIZES = [(336, 336), (672, 336), (336, 672), (500, 400)]  # any-resolution: 3 to 5 tiles of 576 patches
RATIO, REL_TOL = (0.95, 1.05), 0.1  # as in tests/unit/test_bf16_masters.py


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results", help="folder for gpu_fidelity.json")
    parser.add_argument("--config", type=Path, default=CONFIG_DIR, help="a LLaVA-NeXT config.json folder")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--layers", type=int, default=0, help="cut LM and vision tower to N layers (0: all)")
    parser.add_argument("--shrink", action="store_true", help="tiny widths, 2 layers: the whole script on a CPU")
    parser.add_argument("--dry-run", action="store_true", help="meta-device shape and skip-list checks only")
    parser.add_argument("--skip", default="", help="comma list of variants to leave out, e.g. ref_fp32,qlora")
    return parser.parse_args(argv)


def model_config(args):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(args.config)
    config.image_token_id = word_tokenizer().convert_tokens_to_ids("<image>")  # our word-level tokenizer's id
    text, vision = config.text_config, config.vision_config
    if args.shrink:
        text.update(dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1,
                         head_dim=32, num_hidden_layers=2))
        vision.update(dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_hidden_layers=2))
    if args.layers:
        text.num_hidden_layers = vision.num_hidden_layers = max(args.layers, 2)  # feature layer -2 needs two
    return config


def processor_for(config):
    from transformers import LlavaNextImageProcessorPil, LlavaNextProcessor

    tok = word_tokenizer()
    size = config.vision_config.image_size
    images = LlavaNextImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                        image_grid_pinpoints=config.image_grid_pinpoints)
    processor = LlavaNextProcessor(images, tok, patch_size=config.vision_config.patch_size,
                                   vision_feature_select_strategy=config.vision_feature_select_strategy,
                                   num_additional_image_tokens=1, image_token="<image>")
    processor.chat_template = LLAVA_NEXT.fallback_template(config, tok)
    return processor


def examples(processor, spec=LLAVA_NEXT):
    enc = PromptAnswerTokenizer(processor, spec, 8192)
    gen = torch.Generator().manual_seed(0)
    pics = [Image.fromarray((torch.rand(h, w, 3, generator=gen) * 255).byte().numpy()) for w, h in SIZES]
    return [enc.encode(p, "Describe this picture in a few words.", a) for p, a in zip(pics, ANSWERS)]


def write_checkpoint(config, path: Path) -> float:
    """A random bf16 checkpoint at ``config``'s shape (weights drawn on the GPU), with its processor."""
    from transformers import LlavaNextForConditionalGeneration

    start = time.perf_counter()
    torch.manual_seed(0)
    with DEV:
        model = LlavaNextForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.save_pretrained(path)
    processor_for(config).save_pretrained(path)
    del model
    free()
    return time.perf_counter() - start


def free() -> None:
    import gc

    gc.collect()
    if DEV.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def gib(n_bytes: int) -> float:
    return round(n_bytes / 2**30, 2)


def base_name(name: str) -> str:
    name = name.removeprefix("base_model.model.")
    for wrapper in (".base_layer", ".modules_to_save.default", ".original_module"):
        name = name.replace(wrapper, "")
    return name


def run_config(args, out: Path, bf16: str, *extra):
    return load_config(overrides=[
        f"output_dir={out}", f"train.max_steps={args.steps}", "train.lr=2e-4", "train.projector_lr=2e-5",
        f"train.batch_size={args.batch}", "train.logging_steps=1", "train.save_steps=-1", "train.eval_each_epoch=false",
        "train.warmup_ratio=0", "train.scheduler=constant", "train.lora.dropout=0", "train.lora.targets=lm+projector",
        f"train.bf16={bf16}", *extra])


VARIANTS = {  # name -> (model.dtype, train.bf16, model.quantization, extra train overrides)
    "ref_amp": ("fp32", "true", "none", ()),
    "ref_fp32": ("fp32", "false", "none", ()),
    "bf16": ("bf16", "auto", "none", ()),
    "no_masters": ("bf16", "false", "none", ()),
    "qlora": ("bf16", "auto", "4bit", ("train.optim=paged_adamw_8bit",)),
}


def run_variant(args, ckpt: Path, name: str, tmp: Path) -> dict:
    """3 steps of ``fit``; the watched parameters' updates (fp32, on the CPU) and what was seen."""
    dtype, bf16, quant, extra = VARIANTS[name]
    free()
    start = time.perf_counter()
    model, processor, spec, weights = load_model(ModelConfig(name=str(ckpt), dtype=dtype, quantization=quant),
                                                 training=True, device=DEV)
    info = {"load_s": round(time.perf_counter() - start, 1)}
    if DEV.type == "cuda":
        info["weights_gib"] = gib(torch.cuda.memory_allocated())
    if quant != "none":
        info.update(qlora_facts(model, spec))
    before = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()
              if n.startswith(tuple(WATCHED.values()))}
    masters = fit_module.keep_fp32_masters
    if name == "no_masters":  # the code before issue 8: bf16 storage, no autocast
        fit_module.keep_fp32_masters = lambda model, dtype: []
    try:
        cfg = run_config(args, tmp / name, bf16, *extra)
        result = fit_module.fit(model, spec, weights, examples(processor, spec), None, cfg, str(tmp / name),
                                processor.tokenizer.pad_token_id)
    finally:
        fit_module.keep_fp32_masters = masters
    trained = {base_name(n): p for n, p in result.model.named_parameters()
               if "lora_" not in n and base_name(n) in before}
    opt = result.trainer.optimizer
    info.update(
        losses=[round(h["loss"], 4) for h in result.log_history if "loss" in h], fit_s=round(result.seconds, 1),
        autocast=result.trainer.args.bf16, optimizer=type(getattr(opt, "optimizer", opt)).__name__,  # unwrap accelerate's
        trained_dtypes=sorted({str(p.dtype) for p in trained.values()}),
        lora_b_moved=sum(int(p.abs().sum().item() > 0) for n, p in result.model.named_parameters() if "lora_B" in n),
        lora_b=sum(1 for n, _ in result.model.named_parameters() if "lora_B" in n),
    )
    if DEV.type == "cuda":
        info["peak_gib"] = gib(torch.cuda.max_memory_allocated())
    deltas = {n: trained[n].detach().float().cpu() - before[n] for n in before}
    del model, result, trained, opt
    free()
    return {"info": info, "deltas": deltas}


def qlora_facts(model, spec) -> dict:
    keep = unquantized_prefixes(spec)
    names = [n for n, m in model.named_modules() if type(m).__name__ in ("Linear4bit", "Linear8bitLt")]
    dtypes = {p: sorted({str(t.dtype) for n, t in model.named_parameters() if n.startswith(p + ".") or n == p})
              for p in keep}
    compute = sorted({str(m.compute_dtype) for m in model.modules() if type(m).__name__ == "Linear4bit"})
    return {"linear4bit": len(names), "linear4bit_in_lm": sum(n.startswith("model.language_model.") for n in names),
            "linear4bit_under_kept": quantized_under(model, keep), "kept_dtypes": dtypes, "compute_dtype": compute}


def compare(test: dict, ref: dict, prefix: str) -> dict:
    names = sorted(n for n in ref if n.startswith(prefix))
    a = torch.cat([test[n].flatten() for n in names])
    b = torch.cat([ref[n].flatten() for n in names])
    ratio, rel = float(a.norm() / b.norm()), float((a - b).norm() / b.norm())
    return {"norm_ratio": round(ratio, 4), "rel_diff": round(rel, 4), "ref_norm": float(b.norm()),
            "ok": RATIO[0] < ratio < RATIO[1] and rel < REL_TOL}


def dry_run(args, record: Recorder) -> None:
    """The real shape on the meta device: what QLoRA would quantize, by transformers' own matcher."""
    from transformers import LlavaNextForConditionalGeneration
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    config = model_config(args)
    with torch.device("meta"):
        model = LlavaNextForConditionalGeneration(config)
    keep = unquantized_prefixes(LLAVA_NEXT)
    skip = HfQuantizer.get_modules_to_not_convert(model, keep, model._keep_in_fp32_modules)
    linears = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear]
    converted = [n for n in linears if should_convert_module(n, skip)]
    lm = re.compile(rf"{LLAVA_NEXT.lm_prefix}\..*")
    exs = examples(processor_for(config))
    for name, (_, bf16, _, extra) in VARIANTS.items():
        run_config(args, args.out / "unused", bf16, *extra)  # every variant's overrides are valid
    record("dry_run", params=sum(p.numel() for p in model.parameters()), skip_list=keep, linears=len(linears),
           would_quantize=len(converted), all_in_lm=all(lm.fullmatch(n) for n in converted),
           kept=len(linears) - len(converted), seq_lengths=[len(e["input_ids"]) for e in exs])


def main(argv=None) -> dict:
    args = parse_args(argv)
    record = Recorder(args.out / ("gpu_fidelity_dryrun.json" if args.dry_run else "gpu_fidelity.json"))
    import peft
    import transformers

    device = torch.cuda.get_device_name(0) if DEV.type == "cuda" else "cpu"
    record("env", torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__, device=device,
           shrink=args.shrink, layers=args.layers, steps=args.steps, batch=args.batch)
    if args.dry_run:
        dry_run(args, record)
        return record.results
    skip = set(filter(None, args.skip.split(",")))
    if DEV.type != "cuda":
        skip.add("qlora")
    else:
        try:
            import bitsandbytes  # noqa: F401  (heavy optional dependency, CUDA only)
        except ImportError:
            skip.add("qlora")
            record("qlora", skipped="bitsandbytes is not installed (see bench/README.md)")
    tmp = Path(tempfile.mkdtemp(prefix="gpu_fidelity_"))
    try:
        ckpt = tmp / "checkpoint"
        record("checkpoint", seconds=round(write_checkpoint(model_config(args), ckpt), 1))
        runs = {}
        for name in VARIANTS:
            if name not in skip:
                runs[name] = run_variant(args, ckpt, name, tmp)
                record(name, **runs[name]["info"])
        for test in ("bf16", "no_masters", "ref_fp32", "qlora"):
            for ref in ("ref_amp", "ref_fp32"):
                if test in runs and ref in runs and test != ref:
                    record(f"{test}_vs_{ref}", **{k: compare(runs[test]["deltas"], runs[ref]["deltas"], p)
                                                  for k, p in WATCHED.items()})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record.results


if __name__ == "__main__":
    main()
    print("done")
