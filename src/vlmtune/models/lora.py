"""What trains: LoRA targets scoped per sub-model, modules trained whole, and the trainable share."""

from __future__ import annotations

from dataclasses import dataclass

from vlmtune.config import LoraConfig
from vlmtune.errors import VlmtuneError
from vlmtune.models.family import FamilySpec
from vlmtune.models.registry import matching_modules


@dataclass
class TrainPlan:
    lora_pattern: str | None  # regex for PEFT target_modules; None = no LoRA
    whole: tuple[str, ...]  # module paths trained whole (PEFT modules_to_save)
    full: bool = False  # every parameter trains


def plan_for(spec: FamilySpec, cfg: LoraConfig) -> TrainPlan:
    parts = cfg.targets.split("+")
    if cfg.targets == "full":
        return TrainPlan(None, (), full=True)
    patterns = []
    if "lm" in parts:
        patterns.append(spec.lm_pattern())
    if "vision" in parts:
        if spec.vision_pattern() is None:
            raise VlmtuneError(f"train.lora.targets={cfg.targets}: family {spec.name} has no vision LoRA targets")
        patterns.append(spec.vision_pattern())
    whole = spec.projector_modules + spec.extra_trainable if "projector" in parts else ()
    pattern = "|".join(f"(?:{p})" for p in patterns) or None
    return TrainPlan(pattern, whole)


def apply_plan(model, spec: FamilySpec, cfg: LoraConfig):
    """Freeze the model, then make the planned parts trainable. Returns the (maybe PEFT) model."""
    plan = plan_for(spec, cfg)
    if plan.full:
        model.requires_grad_(True)
        return model
    if plan.lora_pattern is None:
        model.requires_grad_(False)
        for path in plan.whole:
            model.get_submodule(path).requires_grad_(True)
        return model
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    if not matching_modules(model, plan.lora_pattern):
        raise VlmtuneError(f"train.lora.targets={cfg.targets}: no module of {type(model).__name__} matches {plan.lora_pattern}")
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=plan.lora_pattern,
        modules_to_save=[p.split(".")[-1] for p in plan.whole] or None,
    )
    return get_peft_model(model, peft_cfg)


def trainable_share(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
