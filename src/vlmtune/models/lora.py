"""What trains: LoRA targets scoped per sub-model, modules trained whole, and the trainable share."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from vlmtune.config import LoraConfig
from vlmtune.errors import VlmtuneError
from vlmtune.models.family import FamilySpec
from vlmtune.models.registry import matching_modules


@dataclass(frozen=True)
class TrainPlan:
    """What trains in one run: computed once (``check_plan``), recorded in the run dir, passed on."""

    targets: str  # train.lora.targets it was made from
    lora_pattern: str | None  # regex for PEFT target_modules; None = no LoRA
    whole: tuple[str, ...]  # module paths trained whole (PEFT modules_to_save)
    full: bool = False  # every parameter trains
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0

    @property
    def trains_vision(self) -> bool:
        return self.full or "vision" in self.targets.split("+")

    @property
    def saves_full_model(self) -> bool:
        """No adapter to save: a full fine-tune, or the projector alone (stage-1 alignment)."""
        return self.full or self.lora_pattern is None

    def to_dict(self) -> dict:
        return asdict(self)


def plan_for(spec: FamilySpec, cfg: LoraConfig) -> TrainPlan:
    parts = cfg.targets.split("+")
    shape = {"targets": cfg.targets, "r": cfg.r, "alpha": cfg.alpha, "dropout": cfg.dropout}
    if cfg.targets == "full":
        return TrainPlan(lora_pattern=None, whole=(), full=True, **shape)
    patterns = []
    if "lm" in parts:
        patterns.append(spec.lm_pattern())
    if "vision" in parts:
        if spec.vision_pattern() is None:
            raise VlmtuneError(f"train.lora.targets={cfg.targets}: family {spec.name} has no vision LoRA targets")
        patterns.append(spec.vision_pattern())
    whole = spec.projector_modules + spec.extra_trainable if "projector" in parts else ()
    pattern = "|".join(f"(?:{p})" for p in patterns) or None
    if pattern and whole:  # what trains whole gets no LoRA inside (e.g. IDEFICS cross-attention layers)
        pattern = rf"(?!(?:{'|'.join(re.escape(w) for w in whole)})\.)(?:{pattern})"
    return TrainPlan(lora_pattern=pattern, whole=whole, **shape)


def check_plan(model, spec: FamilySpec, cfg: LoraConfig | TrainPlan) -> TrainPlan:
    """The plan, after checking that every named part exists: fails before any work is done."""
    plan = cfg if isinstance(cfg, TrainPlan) else plan_for(spec, cfg)
    if plan.lora_pattern is not None and not matching_modules(model, plan.lora_pattern):
        raise VlmtuneError(f"train.lora.targets={plan.targets}: no module of {type(model).__name__} matches {plan.lora_pattern}")
    for path in plan.whole:
        _part(model, spec, path)
    return plan


def apply_plan(model, spec: FamilySpec, cfg: LoraConfig | TrainPlan):
    """Freeze the model, then make the planned parts trainable. Returns the (maybe PEFT) model."""
    plan = check_plan(model, spec, cfg)
    if plan.full:
        model.requires_grad_(True)
        return model
    if plan.lora_pattern is None:
        model.requires_grad_(False)
        for path in plan.whole:
            _part(model, spec, path).requires_grad_(True)
        return model
    modules = [m for p in plan.whole if _is_module(model, spec, p) for m in _expand(model, p)]
    parameters = [p for p in plan.whole if not _is_module(model, spec, p)]
    return _peft_model(model, _peft_config(plan, modules), parameters)


def _expand(model, path: str) -> list[str]:
    """PEFT cannot wrap an nn.ModuleList in modules_to_save: name its items instead."""
    from torch import nn

    module = model.get_submodule(path)
    return [f"{path}.{i}" for i in range(len(module))] if isinstance(module, nn.ModuleList) else [path]


def _peft_config(plan: TrainPlan, modules: list[str]):
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=plan.r,
        lora_alpha=plan.alpha,
        lora_dropout=plan.dropout,
        target_modules=plan.lora_pattern,
        # Full paths: a bare leaf name would also match same-named modules elsewhere in the model.
        modules_to_save=modules or None,
    )


def _peft_model(model, peft_cfg, parameters: list[str]):
    """get_peft_model, or where bare parameters train whole, the PeftModel that saves them too."""
    from peft import get_peft_model

    if not parameters:
        return get_peft_model(model, peft_cfg)
    peft_cfg.base_model_name_or_path = getattr(model, "name_or_path", None) or None  # as get_peft_model does
    peft_model = _peft_class()(model, peft_cfg)
    peft_model.extra_parameters = tuple(parameters)
    for path in parameters:  # after wrapping: PEFT freezes everything outside its adapters
        model.get_parameter(path).requires_grad_(True)
    return peft_model


def _part(model, spec: FamilySpec, path: str):
    """The module or bare nn.Parameter a row names to train whole."""
    for get in (model.get_submodule, model.get_parameter):
        try:
            return get(path)
        except AttributeError:
            pass
    raise VlmtuneError(f"family {spec.name}: {type(model).__name__} has no module or parameter {path}")


def _is_module(model, spec: FamilySpec, path: str) -> bool:
    from torch import nn

    return isinstance(_part(model, spec, path), nn.Module)


@cache
def _peft_class():
    """PeftModel that also saves bare parameters trained whole (LLaVA-NeXT's image_newline).

    PEFT trains and saves modules only (LoRA layers, modules_to_save); a bare nn.Parameter stays
    frozen and unsaved. We write such parameters into the adapter file under their model key;
    PEFT loads checkpoint keys that belong to no adapter unchanged into the model, so a plain
    ``PeftModel.from_pretrained`` (and Trainer's resume) restores them.
    """
    from peft import PeftModel

    class PeftModelWithParameters(PeftModel):
        extra_parameters: tuple[str, ...] = ()

        def save_pretrained(self, save_directory, **kwargs):
            super().save_pretrained(save_directory, **kwargs)
            file = Path(save_directory) / "adapter_model.safetensors"
            if file.is_file():  # absent on non-main processes
                from safetensors.torch import load_file, save_file

                base = self.get_base_model()
                tensors = load_file(file)
                tensors.update({f"base_model.model.{p}": base.get_parameter(p).detach().cpu().contiguous()
                                for p in self.extra_parameters})
                save_file(tensors, file, metadata={"format": "pt"})

    return PeftModelWithParameters


def trainable_share(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
