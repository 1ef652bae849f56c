"""A few LoRA steps on a tiny random LLaVA: the loss falls and only the intended weights move."""

import pytest
import torch
from PIL import Image

import tiny
from vlmtune.config import load_config
from vlmtune.training.collate import Collator
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.models.lora import apply_plan
from vlmtune.models.registry import AYA_VISION, LLAVA
from vlmtune.training.features import FEATURES, compute_features
from vlmtune.training.fit import fit
from vlmtune.training.trainer import answer_loss

ANSWERS = ["a white rook", "a black knight", "a white queen and a black pawn", "a red circle"]
COLOURS = [(250, 250, 250), (10, 10, 10), (200, 200, 120), (220, 20, 20)]


# The embedded default's two layouts, tiny: LLaVA (a token per patch + CLS) and Aya Vision (2x2 pixel shuffle).
LAYOUTS = {"llava": (tiny.llava, LLAVA), "aya": (tiny.aya_default, AYA_VISION)}


def examples(processor, spec=LLAVA):
    enc = PromptAnswerTokenizer(processor, spec, 64)
    return [enc.encode(Image.new("RGB", (30, 30), c), "Describe this picture.", a) for a, c in zip(ANSWERS, COLOURS)]


def config(tmp_path, *extra):
    return load_config(overrides=[f"output_dir={tmp_path}", "train.max_steps=30", "train.lr=1e-2",
                                  "train.batch_size=4", "train.logging_steps=1", "train.save_steps=-1",
                                  "train.eval_each_epoch=false", "train.bf16=false", "train.warmup_ratio=0",
                                  "train.scheduler=constant", *extra])


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("feature_cache", [True, False])
def test_lora_steps_reduce_loss_and_change_only_adapters_and_projector(tmp_path, feature_cache, layout):
    build, spec = LAYOUTS[layout]
    model, processor = build()
    cfg = config(tmp_path, f"train.feature_cache={str(feature_cache).lower()}")
    before = snapshot(model)
    result = fit(model, spec, torch.float32, examples(processor, spec), None, cfg, str(tmp_path), tiny.VOCAB["<pad>"])
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert losses[-1] < 0.5 * losses[0]
    after = {n: p.detach() for n, p in result.model.named_parameters()}
    frozen_moved = [n for n, p in after.items() if "lora_" not in n and "modules_to_save" not in n
                    and not torch.equal(p, before[original_name(n)])]
    assert frozen_moved == []
    lora_b = [n for n in after if "lora_B" in n]
    assert lora_b and all(after[n].abs().sum() > 0 for n in lora_b)  # B starts at zero
    assert all("language_model" in n for n in lora_b)  # targets=lm+projector: no vision LoRA
    projector = [n for n in after if "modules_to_save" in n]
    assert projector and all(not torch.equal(after[n], before[original_name(n)]) for n in projector)


def original_name(peft_name: str) -> str:
    """Parameter name in the unwrapped model."""
    name = peft_name.removeprefix("base_model.model.")
    for wrapper in (".base_layer", ".modules_to_save.default", ".original_module"):
        name = name.replace(wrapper, "")
    return name


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_cached_features_give_the_same_loss_as_pixels(layout):
    build, spec = LAYOUTS[layout]
    model, processor = build()
    exs = examples(processor, spec)
    pixels = Collator(tiny.VOCAB["<pad>"])(exs)
    cached_exs = [dict(e) for e in exs]
    compute_features(model, spec, cached_exs, batch_size=3)
    cached = Collator(tiny.VOCAB["<pad>"])(cached_exs)
    assert FEATURES in cached and "pixel_values" not in cached
    # What is cached is the projector's input: 4x4 DINOv2 patches for Aya (no CLS), 2x2 + CLS for LLaVA.
    assert cached[FEATURES].shape[1] == {"llava": 5, "aya": 16}[layout]
    with torch.no_grad():
        a, _ = answer_loss(model, spec, pixels)
        b, _ = answer_loss(model, spec, cached)
        full = model(**pixels).loss  # transformers' own loss over all positions, same labels
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, full)


def test_lm_only_targets_leave_projector_and_vision_frozen():
    model, _ = tiny.llava()
    cfg = load_config(overrides=["train.lora.targets=lm"])
    peft_model = apply_plan(model, LLAVA, cfg.train.lora)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("language_model" in n and "lora_" in n for n in trainable)
    # 2 layers x 7 projections x (A, B)
    assert len(trainable) == 2 * 7 * 2


def test_vision_targets_reach_the_vision_tower_only_through_its_own_names():
    model, _ = tiny.llava()
    cfg = load_config(overrides=["train.lora.targets=lm+vision"])
    names = [n for n, p in apply_plan(model, LLAVA, cfg.train.lora).named_parameters() if p.requires_grad]
    vision = [n for n in names if "vision_tower" in n]
    # DINOv2: q/k/v/o_proj + fc1/fc2 = 6 linears per layer, 2 layers, A and B
    assert len(vision) == 2 * 6 * 2
    assert not any("multi_modal_projector" in n for n in names)
