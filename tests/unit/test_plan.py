"""``vlmtune plan``: shapes from the shipped configs, image tokens through the family rows, the
activation formula against what autograd really keeps, and the checks bench/plan_check.py reports."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import families_tiny
from vlmtune.config import ModelConfig, load_config
from vlmtune.errors import VlmtuneError
from vlmtune.models.memory import GiB, USABLE, Workload, activation_parts, largest_batch, layout, logits_bytes
from vlmtune.models.planner import Hardware, plan, workload
from vlmtune.models.shapes import SHIPPED, model_shape
from vlmtune.stages.plan import gpu_gib, run_plan

ROOT = Path(__file__).resolve().parents[2]
# Published parameter counts (shared/model-configs/SOURCES.md, meta-device builds of the real configs).
PUBLISHED = {"llava-1.5-7b": 7_063_427_072, "llava-1.5-13b": 13_351_494_656, "llava-next-mistral-7b": 7_566_747_648,
             "llava-next-34b": 34_752_083_968, "idefics2-8b": 8_402_768_112, "qwen2-vl-7b": 8_291_375_616,
             "qwen2.5-vl-7b": 8_292_166_656, "llama-3.2-11b-vision": 10_670_220_835}


def shape_of(name: str, *overrides: str):
    cfg = load_config(overrides=[f"model.name={name}", "data.max_length=20000", *overrides])
    return cfg, model_shape(cfg.model, cfg.train.lora)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_config_builds_at_its_published_size(name):
    _, shape = shape_of(name)
    assert shape.total == PUBLISHED[name]
    assert shape.params["vision"] > 0 and shape.params["projector"] > 0


def test_a_hub_id_of_a_shipped_config_works_offline():
    _, shape = shape_of("llava-hf/llava-1.5-7b-hf")
    assert shape.total == PUBLISHED["llava-1.5-7b"] and "shipped" in shape.source.label


def test_parts_and_lora_counts_of_llava_7b_by_hand():
    _, shape = shape_of("llava-1.5-7b", "train.lora.targets=lm+vision+projector")
    # Projector: Linear(1024, 4096) + Linear(4096, 4096) with biases.
    assert shape.params["projector"] == 1024 * 4096 + 4096 + 4096 * 4096 + 4096
    # r=16 on 7 projections x 32 layers: q,k,v,o 4096x4096, gate/up 4096->11008, down 11008->4096.
    per_layer = 16 * (4 * (4096 + 4096) + 3 * (4096 + 11008))
    assert shape.lora["lm"] == 32 * per_layer
    # CLIP-L: q,k,v,out 1024x1024, fc1/fc2 1024<->4096, 24 layers.
    assert shape.lora["vision"] == 24 * 16 * (4 * 2048 + 2 * 5120)
    assert shape.lora_inputs["lm"] == 32 * (6 * 4096 + 11008)
    # Distinct input tensors: q/k/v read one, o its own, gate/up one, down its own.
    assert shape.lora_distinct_inputs["lm"] == 32 * (3 * 4096 + 11008)
    # CLIP's q/k/v read one tensor, out_proj, fc1 and fc2 one each.
    assert shape.lora_distinct_inputs["vision"] == 24 * (3 * 1024 + 4096)


@pytest.mark.parametrize("name, overrides, lm, vision", [
    ("llava-1.5-7b", (), 576, 577),  # 24 x 24 patches; the CLS token runs through CLIP too
    # any-resolution 672 x 672: base view 576 + 2x2 tiles of 24x24 with one newline per row of 48
    ("llava-next-mistral-7b", (), 576 + 48 * 48 + 48, 5 * 577),
    # pinpoints within 2,000 tokens: 336x672 (1,752) and 672x336 (576 + 48*24 + 48 = 1,776)
    ("llava-next-mistral-7b", ("model.max_image_tokens=2000",), 1776, 3 * 577),
    ("qwen2-vl-7b", (), 12_845_056 // 784, 4 * 12_845_056 // 784),  # max_pixels / (14*2)^2 pixels per token
    ("qwen2.5-vl-7b", ("model.max_image_tokens=1024",), 1024, 4096),
    ("idefics2-8b", (), 5 * 64, 5 * 70 * 70),  # 4 crops + the whole, 64 latents each; 980 px / patch 14
    ("idefics2-8b", ("model.max_image_tokens=100",), 64, 70 * 70),  # splitting switched off
    ("llama-3.2-11b-vision", (), 1, 4 * (40 * 40 + 1)),  # cross-attention: 4 tiles of 560 px
])
def test_image_tokens_follow_the_family_rows_budget(name, overrides, lm, vision):
    _, shape = shape_of(name, *overrides)
    assert (shape.picture.lm, shape.picture.vision) == (lm, vision)


def test_a_budget_below_a_fixed_count_is_refused_with_the_key():
    with pytest.raises(VlmtuneError, match="model.max_image_tokens=100.*576"):
        shape_of("llava-1.5-7b", "model.max_image_tokens=100")


@pytest.mark.parametrize("build, budget, size", [("llava_next", None, (56, 56)), ("qwen2_vl", 4, (400, 400)), ("qwen2_vl", None, (400, 400))])
def test_planned_image_tokens_equal_what_the_real_processor_gives_the_worst_picture(tmp_path, build, budget, size):
    """The stand-in processor arithmetic against the real processor on a tiny checkpoint."""
    from PIL import Image

    from vlmtune.models.loading import load_model
    from vlmtune.models.prompting import PromptAnswerTokenizer
    from vlmtune.models.resolution import image_tokens_in

    model, processor = families_tiny.BUILDERS[build]()
    folder = families_tiny.save(model, processor, tmp_path / build)
    extra = [f"model.max_image_tokens={budget}"] if budget else []
    cfg = load_config(overrides=[f"model.name={folder}", *extra])
    planned = model_shape(cfg.model, cfg.train.lora).picture.lm
    _, real_processor, spec, _ = load_model(cfg.model, training=False, device=torch.device("cpu"))
    enc = PromptAnswerTokenizer(real_processor, spec).encode_prompts([Image.new("RGB", size)], ["x"])
    assert planned == image_tokens_in(real_processor, enc["input_ids"][0])


# ---------------------------------------------------------------- the activation formula vs autograd
def saved_bytes(model, spec, batch, checkpointing: bool, casts: bool, fused: bool = False) -> int:
    """Bytes of the distinct storages autograd keeps for backward (parameters excluded); ``casts``:
    PEFT's cast of each LoRA input to fp32 on (its default) or off (as fit runs under autocast);
    ``fused``: LoRA's update inside an addmm, as fit trains under autocast."""
    from peft.helpers import disable_input_dtype_casting

    from vlmtune.training.fused_lora import fused_lora

    from vlmtune.training.trainer import answer_loss

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            disable_input_dtype_casting(model, active=not casts), fused_lora(model, fused):
        answer_loss(model, spec, batch)
    return sum(saved.values())


def llama_llava(tmp_path):
    """A LLaVA with a Llama LM wide enough that per-token terms dominate (256 wide, 4 layers, GQA 4:1)."""
    from transformers import Dinov2Config, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    import tiny

    torch.manual_seed(0)
    vision = Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                          patch_size=14, image_size=tiny.IMAGE_SIZE)
    text = LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=1, vocab_size=len(tiny.WORDS), pad_token_id=tiny.VOCAB["<pad>"])
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tiny.VOCAB["<image>"],
                         vision_feature_layer=-1, vision_feature_select_strategy="full")
    model = LlavaForConditionalGeneration(config)
    _, processor = tiny.llava()
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    return model.to(torch.bfloat16), processor, tmp_path / "m"


@pytest.mark.parametrize("targets, dropout, checkpointing, casts, fused", [
    ("lm", 0.0, False, False, False), ("lm", 0.0, False, True, False), ("lm", 0.05, False, False, False),
    ("lm", 0.05, False, True, False), ("lm+projector", 0.05, False, False, False),
    ("lm+projector", 0.05, True, False, False), ("lm+projector", 0.0, False, False, True)])
def test_activation_formula_matches_what_autograd_keeps(tmp_path, targets, dropout, checkpointing, casts, fused):
    """bf16 weights under bf16 autocast, SDPA, two equal-length samples (no padding mask). CPU
    dropout keeps a mask in its input's dtype (CUDA's fused kernel a bool one): fp32 after PEFT's
    cast (mask_bytes=4), bf16 without it (2)."""
    from PIL import Image

    from vlmtune.models.lora import apply_plan
    from vlmtune.models.prompting import PromptAnswerTokenizer
    from vlmtune.models.registry import family_for
    from vlmtune.training.collate import Collator

    model, processor, folder = llama_llava(tmp_path)
    cfg = load_config(overrides=[f"model.name={folder}", f"train.lora.targets={targets}", f"train.lora.dropout={dropout}"])
    spec = family_for("llava")
    model = apply_plan(model, spec, cfg.train.lora).train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    enc = PromptAnswerTokenizer(processor, spec, 512)
    answer = "a white rook and a black knight and a white queen " * 3
    batch = Collator(processor.tokenizer.pad_token_id)([enc.encode(Image.new("RGB", (28, 28)), "describe", answer)] * 2)
    batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
    got = saved_bytes(model, spec, batch, checkpointing, casts, fused)
    shape = model_shape(cfg.model, cfg.train.lora)
    w = Workload(batch=2, seq=batch["input_ids"].shape[1], answer_tokens=int((batch["labels"] != -100).sum()) // 2,
                 dropout=dropout > 0, mask_bytes=4 if casts else 2, input_casts=casts, checkpointing=checkpointing,
                 vision_runs=False,
                 projector_trains="projector" in targets)
    kept, _ = activation_parts(shape, w)  # checkpointing: the recomputed layer is not kept from the forward
    planned = kept + logits_bytes(shape, w)
    assert abs(planned - got) <= 0.10 * got, (planned, got, round(planned / got - 1, 3))


def test_checkpointing_keeps_only_layer_inputs_plus_one_layer():
    _, shape = shape_of("llava-1.5-7b")
    w = Workload(batch=4, seq=593, answer_tokens=6, vision_runs=False)
    kept, layer = activation_parts(shape, w)
    gc_kept, gc_layer = activation_parts(shape, replace(w, checkpointing=True))
    tokens = 4 * 593
    # 32 layer inputs in bf16 + the final norm's fp32 input, + the projector's inputs
    assert gc_kept == pytest.approx(tokens * (32 * 2 * 4096 + 4 * 4096) + 4 * 577 * 2 * (1024 + 4096))
    assert layer == 0 and gc_layer == pytest.approx((kept - gc_kept) / 32, rel=0.05)


# ---------------------------------------------------------------- against real figures (bench/plan_check.py)
def test_planner_is_within_15_percent_of_the_measured_h200_peaks():
    sys.path.insert(0, str(ROOT / "bench"))
    import plan_check

    rows = plan_check.measured_peaks()
    assert len(rows) == 3 and all(r["pass"] for r in rows), rows


def test_planner_reproduces_the_seeds_hardware_story():
    """7B LLaVA-1.6 with device_map=auto: not on 2 x 48 GB, on 3 x 48 GB; the 34B ~300 GB (batch 3)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import plan_check

    rows = {(r["model"], r["batch"]): r for r in plan_check.seed_story()}
    seven = rows[("llava-next-mistral-7b", 3)]
    assert not seven["fits_2x48"] and seven["fits_3x48"]
    assert 270 <= rows[("llava-next-34b", 3)]["total_gib"] <= 330


# ---------------------------------------------------------------- options, recommendation, CLI
def test_largest_batch_is_the_edge_of_fitting():
    cfg, shape = shape_of("llava-next-mistral-7b", "train.lora.targets=lm+vision")
    w = workload(cfg, shape)
    usable = 80 * GiB * USABLE
    b = largest_batch(shape, w, "single", 1, usable)
    assert b >= 1
    assert layout(shape, replace(w, batch=b), "single", 1).total <= usable
    assert layout(shape, replace(w, batch=b + 1), "single", 1).total > usable


def test_sharding_divides_what_it_shards():
    cfg, shape = shape_of("llava-1.5-7b", "train.lora.targets=full")
    w = workload(cfg, shape)
    one, z2, z3 = (layout(shape, w, m, 4) for m in ("single", "zero2", "zero3"))
    assert z2.weights == one.weights and z2.optimizer == pytest.approx(one.optimizer / 4)
    assert z3.weights == pytest.approx(one.weights / 4) and z3.activations == one.activations
    assert layout(shape, replace(w, quantization="4bit"), "single", 1).weights == layout(shape, w, "single", 1).weights


def test_qlora_quantizes_only_lm_linears():
    _, shape = shape_of("llava-1.5-7b")
    w = Workload(batch=1, seq=640, answer_tokens=8)
    full, q = layout(shape, w, "single", 1), layout(shape, replace(w, quantization="4bit"), "single", 1)
    # vision tower, projector, embeddings and LM head stay bf16: 7.06 B - 6.48 B quantizable linears
    assert shape.quantizable == 6_476_005_376
    assert full.weights - q.weights == pytest.approx(shape.quantizable * (2 - 0.5 - 1 / 64 - 4 / 16384))


def test_a_model_that_fits_no_gpu_is_planned_onto_several(capsys):
    cfg, shape = shape_of("llava-next-34b", "train.lora.targets=lm+vision", "train.batch_size=1")
    result = plan(cfg, shape, Hardware(gpus=4, gpu_gib=48))
    options = {o["mode"]: o for o in result["options"] if not o["checkpointing"]}
    assert not options["single"]["fits"] and not options["ddp"]["fits"]
    # 65 GiB of bf16 weights + 71 GiB of activations: FSDP + checkpointing is the bf16 way on 48 GB cards
    assert result["recommendation"]["option"] == "4 GPUs, FSDP / ZeRO-3 + checkpointing"
    assert result["recommendation"]["turn_on"] == ["train.gradient_checkpointing=true"]
    assert "fsdp.yaml --num_processes 4" in result["recommendation"]["command"]
    # sharding the weights cannot hold 71 GiB of activations per GPU at any count
    assert result["recommendation"]["gpus_needed"]["zero3"] is None
    assert result["recommendation"]["gpus_needed"]["zero3_checkpointing"] == 2  # 32 GiB of weights + ~6 each


def test_cli_plan_json_and_run_dir(tmp_path, capsys):
    result = run_plan(["model.name=llava-1.5-7b", "train.batch_size=4", "data.max_length=1024"], gpus=2,
                      gpu_mem="80GB", as_json=True)
    printed = json.loads(capsys.readouterr().out)
    assert printed["memory_gib"]["total"] == result["memory_gib"]["total"] and printed["step"]["seq"] == 576 + 64
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  name: llava-1.5-7b\ndata:\n  max_length: 1024\ntrain:\n  batch_size: 2\n")
    again = run_plan([str(run)], gpu_mem="48", as_json=True)
    assert again["step"]["batch"] == 2 and again["hardware"]["gpu_gib"] == 48


@pytest.mark.parametrize("text, gib", [("80GB", 80.0), ("48 GiB", 48.0), ("24g", 24.0), ("40", 40.0)])
def test_gpu_memory_parses(text, gib):
    assert gpu_gib(text) == gib


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(VlmtuneError, match="--gpu-mem"):
        gpu_gib("lots")
    with pytest.raises(VlmtuneError, match="not a run directory"):
        run_plan([str(tmp_path)])


def test_full_text_table_names_every_part(capsys):
    run_plan(["model.name=qwen2.5-vl-7b", "model.max_image_tokens=1024", "data.max_length=2048", "train.lora.targets=lm+vision+projector"],
             gpus=2, gpu_mem="80GB")
    out = capsys.readouterr().out
    for needle in ("parameters  vision", "parameters  projector", "parameters  lm", "optimizer state",
                   "activations kept", "2 GPUs, DDP", "FSDP / ZeRO-3", "recommendation:"):
        assert needle in out


def test_model_config_device_map_is_checked():
    assert load_config(overrides=["model.device_map=auto"]).model.device_map == "auto"
    with pytest.raises(VlmtuneError, match="model.device_map"):
        load_config(overrides=["model.device_map=balanced"])
    assert ModelConfig().device_map is None


def test_a_row_whose_count_needs_its_processor_plans_for_the_budget_or_refuses():
    folder = str(Path(__file__).parents[1] / "data" / "model-configs" / "LiquidAI__LFM2.5-VL-1.6B")
    lora = load_config().train.lora
    with pytest.raises(VlmtuneError, match="has no preprocessor_config.json; set model.max_image_tokens=N"):
        model_shape(ModelConfig(name=folder), lora)
    shape = model_shape(ModelConfig(name=folder, max_image_tokens=256), lora)
    assert (shape.picture.lm, shape.picture.vision) == (256, 1024)  # 2x2 pixel-unshuffle in the projector
