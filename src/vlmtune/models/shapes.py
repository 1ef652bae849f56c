"""What a model is made of, read from its config alone: the memory planner's input.

No weights are read: the model is built on the meta device from ``config.json`` (seconds, even
for 34B). The package ships the configs of a few published checkpoints (assets/model-configs,
see SOURCES.md there), so the planner answers offline for them by short name or hub id; any
local model directory, or a hub id in the local Hugging Face cache, works as well.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from vlmtune.config import ModelConfig
from vlmtune.errors import VlmtuneError
from vlmtune.models.dtype import unquantized_prefixes
from vlmtune.models.family import FamilySpec
from vlmtune.models.generic import spec_for_config
from vlmtune.models.loading import auto_config, local_only, resolve_model_path
from vlmtune.models.lora import plan_for
from vlmtune.models.registry import family_for

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "model-configs"
# Short name -> hub id of the configs shipped in ASSETS.
SHIPPED = {
    "llava-1.5-7b": "llava-hf/llava-1.5-7b-hf",
    "llava-1.5-13b": "llava-hf/llava-1.5-13b-hf",
    "llava-next-mistral-7b": "llava-hf/llava-v1.6-mistral-7b-hf",
    "llava-next-34b": "llava-hf/llava-v1.6-34b-hf",
    "idefics2-8b": "HuggingFaceM4/idefics2-8b",
    "qwen2-vl-7b": "Qwen/Qwen2-VL-7B-Instruct",
    "qwen2.5-vl-7b": "Qwen/Qwen2.5-VL-7B-Instruct",
    "llama-3.2-11b-vision": "meta-llama/Llama-3.2-11B-Vision-Instruct",
}
NO_BUDGET = 10**9  # "no model.max_image_tokens": the most the checkpoint's own settings allow


@dataclass(frozen=True)
class Source:
    """Where a model's config and processor settings were read from."""

    path: str  # local directory or hub id
    label: str  # what the user asked for, and where it was found
    config: object  # transformers PretrainedConfig
    spec: FamilySpec
    offline: bool


def _in_hub_cache(hub_id: str) -> bool:
    from transformers.utils import cached_file

    return cached_file(hub_id, "config.json", local_files_only=True, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False) is not None


def shipped_dir(name: str) -> Path | None:
    """The packaged config folder for a short name or its hub id (None for anything else)."""
    short = name if name in SHIPPED else {v: k for k, v in SHIPPED.items()}.get(name)
    return ASSETS / short if short else None


def open_source(cfg: ModelConfig) -> Source:
    """A local directory, a hub id (its real files in the local cache first), or a shipped config."""
    name = cfg.name
    packaged = shipped_dir(name)
    if packaged is not None and not Path(name).exists() and (name in SHIPPED or not _in_hub_cache(name)):
        path, label, offline = str(packaged), f"{name} (config shipped with vlmtune)", True
    else:
        path = resolve_model_path(name)
        offline = local_only(path)
        label = name if Path(path).exists() else f"{name} (Hugging Face {'cache' if offline else 'hub'})"
    config = auto_config(path, offline)
    spec = family_for(getattr(config, "model_type", None), cfg.family) or spec_for_config(config)  # None: generic row
    return Source(path, label, config, spec, offline)


def meta_model(source: Source):
    """The model built on the meta device: shapes and module names, no memory."""
    import transformers

    model_cls = getattr(transformers, source.spec.model_class)
    with torch.device("meta"):
        return model_cls._from_config(copy.deepcopy(source.config))


# ---------------------------------------------------------------- parameters by part
def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def vision_roots(model, spec: FamilySpec) -> list[str]:
    """Module paths of the vision tower: the row's vision prefix, widened to the enclosing module
    (e.g. Qwen's model.visual around model.visual.blocks) as long as that holds no LM module."""
    names = [n for n, _ in model.named_modules()]
    lm = [n for n in names if re.fullmatch(spec.lm_prefix, n)]
    roots = []
    for root in (n for n in names if re.fullmatch(spec.vision_prefix, n)):
        parent = root.rpartition(".")[0]
        while parent and not any(_under(m, [parent]) for m in lm):
            root, parent = parent, parent.rpartition(".")[0]
        roots.append(root)
    return sorted(set(roots))


def parameter_parts(model, spec: FamilySpec) -> dict[str, int]:
    """Parameter counts of the vision tower, the projector (what the row trains whole) and the rest (LM)."""
    projector = list(spec.projector_modules) + list(spec.extra_trainable)
    vision = vision_roots(model, spec)
    parts = {"vision": 0, "projector": 0, "lm": 0}
    for name, param in model.named_parameters():
        part = "projector" if _under(name, projector) else "vision" if _under(name, vision) else "lm"
        parts[part] += param.numel()
    return parts


def linears(model, pattern: str | None, within: list[str] | None = None) -> list[nn.Linear]:
    """The nn.Linear modules whose full path matches ``pattern`` (optionally only under ``within``)."""
    if pattern is None:
        return []
    regex = re.compile(pattern)
    return [m for n, m in model.named_modules() if isinstance(m, nn.Linear) and regex.fullmatch(n)
            and (within is None or _under(n, within))]


# Sibling linears that read one tensor: q/k/v of an attention block, gate/up of a gated MLP. Without
# LoRA dropout and without PEFT's input casts (fit turns them off under autocast) their adapters'
# lora_A all keep that one tensor for backward, not a copy each. Names outside these sets count as
# their own input: the planner errs on the high side for a layout it does not know.
SHARED_INPUTS = ({"q_proj", "k_proj", "v_proj"}, {"query", "key", "value"}, {"gate_proj", "up_proj"})


def distinct_inputs(model, modules: list[nn.Linear]) -> int:
    """Sum of in_features over the distinct input tensors of ``modules`` (see SHARED_INPUTS)."""
    ids = {id(m) for m in modules}
    seen: set[tuple[str, int]] = set()
    total = 0
    for name, module in model.named_modules():
        if id(module) not in ids:
            continue
        parent, _, leaf = name.rpartition(".")
        group = next((i for i, names in enumerate(SHARED_INPUTS) if leaf in names), None)
        key = (parent, group) if group is not None else (name, -1)
        if key not in seen:
            seen.add(key)
            total += module.in_features
    return total


def quantizable(model, spec: FamilySpec) -> int:
    """Weights that model.quantization=4bit/8bit quantizes: every Linear outside the kept prefixes."""
    keep = unquantized_prefixes(spec)
    return sum(m.weight.numel() for n, m in model.named_modules() if isinstance(m, nn.Linear) and not _under(n, keep))


# ---------------------------------------------------------------- sub-model dimensions
@dataclass(frozen=True)
class LmDims:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int


@dataclass(frozen=True)
class VisionDims:
    hidden: int
    intermediate: int
    layers: int
    mlp_tensors: int  # activation tensors the MLP keeps per intermediate unit (GELU 1, quick_gelu 2, gated SiLU 3)
    norm_bytes: int  # bytes per element a norm keeps of its input (LayerNorm: compute dtype, RMSNorm: fp32)
    has_cls: bool


def lm_dims(config) -> LmDims:
    text = config.get_text_config()
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return LmDims(text.hidden_size, text.intermediate_size, text.num_hidden_layers, heads,
                  getattr(text, "num_key_value_heads", None) or heads, head_dim, text.vocab_size)


def _first(cfg, *names, default=None):
    for name in names:
        value = getattr(cfg, name, None)
        if value is not None:
            return value
    return default


def vision_dims(config, model, roots: list[str], projector: list[str]) -> VisionDims | None:
    """Widths from the tower's own Linear modules (config key names differ between towers): most
    linears read the hidden width; the one that reads another width (fc2 / down_proj) reads the MLP's."""
    vision = getattr(config, "vision_config", None)
    modules = [(n, m) for n, m in model.named_modules() if _under(n, roots) and not _under(n, projector)]
    lins = [m for _, m in modules if isinstance(m, nn.Linear)]
    if vision is None or not lins:
        return None
    widths = [m.in_features for m in lins]
    hidden = max(set(widths), key=widths.count)
    inter = max((m.in_features for m in lins if m.in_features != hidden and m.out_features == hidden), default=4 * hidden)
    layers = _first(vision, "num_hidden_layers", "depth", "layers") + _first(vision, "num_global_layers", default=0)
    gated = any(n.endswith("gate_proj") for n, _ in modules)
    act = str(_first(vision, "hidden_act", "hidden_activation", default="gelu"))
    norm_rms = any("RMSNorm" in type(m).__name__ for _, m in modules)
    cls = any(n.endswith(("class_embedding", "cls_token")) for n, _ in model.named_parameters() if _under(n, roots))
    return VisionDims(hidden, inter, layers, 3 if gated else 2 if act == "quick_gelu" else 1, 4 if norm_rms else 2, cls)


# ---------------------------------------------------------------- image tokens per picture
@dataclass(frozen=True)
class PictureTokens:
    lm: int  # image tokens in the LM sequence (cross-attention families: the placeholder)
    vision: int  # tokens through the vision tower (all tiles / sub-images)
    how: str


def _json(source: Source, filename: str) -> dict:
    if Path(source.path).is_dir():
        file = Path(source.path) / filename
        return json.loads(file.read_text()) if file.is_file() else {}
    from transformers.utils import cached_file

    found = cached_file(source.path, filename, local_files_only=source.offline, _raise_exceptions_for_missing_entries=False,
                        _raise_exceptions_for_connection_errors=False)
    return json.loads(Path(found).read_text()) if found else {}


def processor_settings(source: Source, has_cls: bool):
    """What the family hooks read of a processor (image processor + processor_config.json), without
    a tokenizer: the planner needs the image-token arithmetic, not the text."""
    from transformers import AutoImageProcessor

    try:  # preprocessor_config.json, or (transformers 5 saves) the image_processor entry of processor_config.json
        image_processor = AutoImageProcessor.from_pretrained(source.path, local_files_only=source.offline)
    except (OSError, ValueError):
        image_processor = None
    # transformers 5 nests the sub-processors' settings in processor_config.json: keep the processor's own
    settings = {k: v for k, v in _json(source, "processor_config.json").items() if not isinstance(v, dict)}
    cfg, vision = source.config, getattr(source.config, "vision_config", None)
    settings.setdefault("patch_size", getattr(vision, "patch_size", None))
    settings.setdefault("vision_feature_select_strategy", getattr(cfg, "vision_feature_select_strategy", "default"))
    settings.setdefault("num_additional_image_tokens", int(has_cls))
    perceiver = getattr(cfg, "perceiver_config", None)
    if "image_seq_len" not in settings and perceiver is not None:
        settings["image_seq_len"] = perceiver.resampler_n_latents
    elif "image_seq_len" not in settings and getattr(cfg, "scale_factor", None) and vision is not None:
        settings["image_seq_len"] = (vision.image_size // vision.patch_size) ** 2 // cfg.scale_factor**2
    return SimpleNamespace(image_processor=image_processor, **settings)


def _fixed_lm_tokens(config, vision: VisionDims | None) -> tuple[int, str]:
    """Families whose every picture gets the same count, read from the config keys that set it."""
    text = config.get_text_config()
    if getattr(text, "cross_attention_layers", None) or getattr(config, "cross_layer_interval", None):
        return 1, "one placeholder; the picture reaches the LM through cross-attention"
    for owner, key in ((config, "mm_tokens_per_image"), (text, "num_image_tokens")):
        if getattr(owner, key, None):
            return getattr(owner, key), f"fixed ({key})"
    v = config.vision_config
    patches = (v.image_size // v.patch_size) ** 2
    full = getattr(config, "vision_feature_select_strategy", "default") == "full" and vision is not None and vision.has_cls
    return patches + int(full), f"fixed ({v.image_size} px / patch {v.patch_size})"


def _views(config, settings, lm_tokens: int) -> int:
    """Tiles / sub-images a picture becomes in the vision tower, from the config keys that decide it."""
    vision = config.vision_config
    pinpoints = getattr(config, "image_grid_pinpoints", None)
    if pinpoints:  # any-resolution: the base view + the largest tile grid left allowed
        tile = vision.image_size
        return 1 + max((h // tile) * (w // tile) for h, w in pinpoints)
    if getattr(vision, "max_num_tiles", None):
        return vision.max_num_tiles
    if getattr(settings, "image_seq_len", None):
        return max(1, lm_tokens // settings.image_seq_len)
    return 1


def picture_tokens(source: Source, model, max_image_tokens: int | None) -> PictureTokens:
    """The most image tokens any picture can get at ``model.max_image_tokens`` (None: the checkpoint's
    settings), through the family's own budget arithmetic (``FamilyHooks.limit_image_tokens``)."""
    roots = vision_roots(model, source.spec)
    vision = vision_dims(source.config, model, roots, list(source.spec.projector_modules))
    settings = processor_settings(source, vision is not None and vision.has_cls)
    config = copy.deepcopy(source.config)  # LLaVA-NeXT's hook edits the grid pinpoints in the config
    budget = max_image_tokens or NO_BUDGET
    info = {}
    if settings.image_processor is not None:
        try:
            info = source.spec.hooks.limit_image_tokens(settings, config, budget)
        except VlmtuneError:  # the generic row maps no budget: without one, fall back to the config's count
            if max_image_tokens is not None:
                raise
    if "image_tokens" in info:
        lm, how = info["image_tokens"], ", ".join(f"{k}={v}" for k, v in info.items() if k != "image_tokens")
    elif not getattr(config.vision_config, "image_size", None):  # e.g. LFM2-VL: no processor file, no fixed side
        return _budget_only(source, config, max_image_tokens)
    else:
        lm, how = _fixed_lm_tokens(config, vision)
        if max_image_tokens is not None and lm > max_image_tokens:
            raise VlmtuneError(f"model.max_image_tokens={max_image_tokens}: {source.spec.name} gives every picture a "
                               f"fixed {lm} image tokens; set at least {lm} or leave it unset")
    merge = getattr(config.vision_config, "spatial_merge_size", None)
    if merge:  # Qwen-VL: one LM token per merge x merge patches
        return PictureTokens(lm, lm * merge * merge, how)
    v = config.vision_config
    per_view = (v.image_size // v.patch_size) ** 2 + int(vision is not None and vision.has_cls)
    return PictureTokens(lm, per_view * _views(config, settings, lm), how)


def _budget_only(source: Source, config, max_image_tokens: int | None) -> PictureTokens:
    """No processor settings and no fixed input side to count from: plan for the budget, or refuse."""
    if max_image_tokens is None:
        raise VlmtuneError(f"vlmtune plan: {source.spec.name} counts image tokens with its image processor, and "
                           f"{source.path} has no preprocessor_config.json; set model.max_image_tokens=N to plan "
                           "for at most N image tokens per picture")
    # Pixel-unshuffle projectors (LFM2-VL, Idefics3) merge factor x factor vision tokens into one.
    factor = getattr(config, "downsample_factor", None) or getattr(config, "scale_factor", None) or 1
    return PictureTokens(max_image_tokens, max_image_tokens * factor * factor,
                         f"at most model.max_image_tokens={max_image_tokens}")


# ---------------------------------------------------------------- everything the planner reads
@dataclass(frozen=True)
class ModelShape:
    source: Source
    params: dict[str, int]  # vision / projector / lm
    whole: int  # parameters trained whole (projector & co., or everything for full)
    lora: dict[str, int]  # LoRA parameters under the LM / the vision tower
    lora_inputs: dict[str, int]  # sum of in_features of the LoRA-wrapped linears, LM / vision (all layers)
    lora_distinct_inputs: dict[str, int]  # the same over distinct input tensors (q/k/v share one: SHARED_INPUTS)
    lora_modules: dict[str, int]
    quantizable: int
    lm: LmDims
    vision: VisionDims | None
    projector_width: int  # in + out features of the projector's first Linear (its activations per vision token)
    picture: PictureTokens
    full: bool

    @property
    def total(self) -> int:
        return sum(self.params.values())

    @property
    def trainable(self) -> int:
        return self.whole + sum(self.lora.values())


def model_shape(cfg: ModelConfig, lora_cfg, source: Source | None = None) -> ModelShape:
    source = source or open_source(cfg)
    spec = source.spec
    model = meta_model(source)
    params = parameter_parts(model, spec)
    plan = plan_for(spec, lora_cfg)
    roots = vision_roots(model, spec)
    wrapped = linears(model, plan.lora_pattern)
    in_vision = linears(model, plan.lora_pattern, roots)
    ids = {id(m) for m in in_vision}
    in_lm = [m for m in wrapped if id(m) not in ids]
    lora = {"lm": sum(lora_cfg.r * (m.in_features + m.out_features) for m in in_lm),
            "vision": sum(lora_cfg.r * (m.in_features + m.out_features) for m in in_vision)}
    whole = sum(params.values()) if plan.full else sum(
        p.numel() for n, p in model.named_parameters() if _under(n, plan.whole))
    projector = [m for n, m in model.named_modules() if isinstance(m, nn.Linear) and _under(n, spec.projector_modules)]
    return ModelShape(
        source=source, params=params, whole=whole, lora=lora,
        lora_inputs={"lm": sum(m.in_features for m in in_lm), "vision": sum(m.in_features for m in in_vision)},
        lora_distinct_inputs={"lm": distinct_inputs(model, in_lm), "vision": distinct_inputs(model, in_vision)},
        lora_modules={"lm": len(in_lm), "vision": len(in_vision)}, quantizable=quantizable(model, spec),
        lm=lm_dims(source.config), vision=vision_dims(source.config, model, roots, list(spec.projector_modules)),
        projector_width=projector[0].in_features + projector[0].out_features if projector else 0,
        picture=picture_tokens(source, model, cfg.max_image_tokens), full=plan.full,
    )
