"""Batched, left-padded generation from the same prompt ids training used."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from vlmtune.config import EvalConfig
from vlmtune.data.images import model_rgb
from vlmtune.models.loading import load_for_inference
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.models.family import FamilySpec


def generation_kwargs(cfg: EvalConfig, encoder: PromptAnswerTokenizer) -> dict:
    kwargs = {
        "max_new_tokens": cfg.max_new_tokens,
        "num_beams": cfg.num_beams,
        "do_sample": cfg.do_sample,
        "repetition_penalty": cfg.repetition_penalty,
        "eos_token_id": encoder.stop_token_ids(),
        "pad_token_id": encoder.tokenizer.pad_token_id,
    }
    if cfg.do_sample:
        kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p)
    else:  # silence "temperature is set but do_sample=False" from checkpoints' generation configs
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


@torch.no_grad()
def generate_answers(model, processor, spec: FamilySpec, images: list, prompts: list[str], cfg: EvalConfig,
                     desc: str = "generating") -> list[str]:
    encoder = PromptAnswerTokenizer(processor, spec)
    kwargs = generation_kwargs(cfg, encoder)
    device = next(model.parameters()).device
    answers: list[str] = []
    model.eval()
    for start in tqdm(range(0, len(images), cfg.batch_size), desc=desc, unit="batch"):
        inputs = encoder.encode_prompts(images[start : start + cfg.batch_size], prompts[start : start + cfg.batch_size])
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        out = model.generate(**inputs, **kwargs)
        new = out[:, inputs["input_ids"].shape[1] :]
        answers += [t.strip() for t in encoder.tokenizer.batch_decode(new, skip_special_tokens=True)]
    return answers


def caption_images(model: str, image_paths: list[Path], prompt: str, batch_size: int = 8) -> list[str]:
    """Captions for image files from any model/run directory (used to pre-fill caption templates)."""
    from PIL import Image

    net, processor, spec = load_for_inference(model)
    images = [model_rgb(Image.open(p)) for p in image_paths]
    cfg = EvalConfig(batch_size=batch_size)
    return generate_answers(net, processor, spec, images, [prompt] * len(images), cfg, desc="pre-filling captions")
