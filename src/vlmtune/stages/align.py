"""``vlmtune align``: LLaVA stage 1 for the embedded model — only the projector trains, on shapes.

Writes the projector as a small safetensors artifact (bf16, about 1 MB) with its recipe and
held-out scores in the metadata; the packaged copy is what ``ensure_default_base`` loads.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from vlmtune.config import ModelConfig, load_config
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.data.dataset import build_dataset
from vlmtune.data.schema import TEST, TRAIN
from vlmtune.data.synth import cached_set
from vlmtune.data.synth.shapes import synth_shapes
from vlmtune.evaluation.predictions import predict_split, summarize
from vlmtune.models.default import PROJECTOR_FILE, DefaultBaseSpec, ensure_default_base, save_projector
from vlmtune.models.loading import load_model
from vlmtune.paths import cache_root
from vlmtune.run_dir import versions
from vlmtune.training.fit import encode_split, fit

# The projector is aligned at the base's own size. The LLaVA layout could align at 112 px (64 tokens)
# and be used at 168 px, but the pixel-shuffle connector aligned on 4x4 tokens (112 px) left the base
# mute on 8x8 (224 px): measured, most answers empty. At 64 tokens a step costs what 112 px did before.
ALIGN_IMAGE_SIZE = DefaultBaseSpec().image_size
ALIGN_DEFAULTS = [
    "train.lora.targets=projector", "train.lr=1e-3", "train.batch_size=16", "train.warmup_ratio=0.03",
    "train.save_steps=-1", "data.augment.views=1", "train.eval_each_epoch=false", "train.logging_steps=20", "eval.batch_size=16",
]


def shapes_data(n_images: int, size: int, seed: int) -> Path:
    """Generated once per (n, size, seed) and reused."""
    recipe = {"n": n_images, "size": size, "seed": seed, "version": 1}
    return cached_set("shapes", recipe, lambda out: synth_shapes(out, n=n_images, size=size, seed=seed, test_ratio=0.05))


def run_align(out: Path | None, steps: int, n_images: int, seed: int, overrides: list[str]) -> dict:
    spec = DefaultBaseSpec(seed=seed)
    cfg = load_config(overrides=[*ALIGN_DEFAULTS, f"train.max_steps={steps}", f"train.seed={seed}", *overrides])
    data = build_dataset(shapes_data(n_images, ALIGN_IMAGE_SIZE, seed), cfg.data.prompt)
    base = ensure_default_base(projector=None, spec=spec)
    model, processor, family, dtype = load_model(ModelConfig(name=str(base)), training=True, bf16=cfg.train.bf16)
    encoder = PromptAnswerTokenizer(processor, family, cfg.data.max_length)
    result = fit(model, family, dtype, encode_split(encoder, data[TRAIN], TRAIN), None, cfg,
                 str(cache_root() / "align-checkpoints"), processor.tokenizer.pad_token_id)
    scores = summarize(predict_split(result.model, processor, family, data[TEST], cfg.eval, cfg.data, "held-out shapes"))
    info = {"steps": steps, "n_images": n_images, "aligned_at_px": ALIGN_IMAGE_SIZE, "seconds": round(result.seconds), "held_out": scores,
            "train": asdict(cfg.train), "versions": versions()}
    target = Path(out) if out else PROJECTOR_FILE
    save_projector(result.model.model.multi_modal_projector.state_dict(), spec, target, info)
    print(f"projector written to {target}; held-out shapes: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    return info
