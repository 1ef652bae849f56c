"""The fine-tuning routine shared by ``align`` (stage 1) and ``train`` (stage 2)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vlmtune.config import RunConfig
from vlmtune.training.collate import Collator
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.data.images import model_rgb
from vlmtune.models.dtype import autocast_bf16
from vlmtune.models.lora import apply_plan, plan_for, trainable_share
from vlmtune.models.family import FamilySpec
from vlmtune.training.checkpoints import newest_valid_checkpoint, require_disk_room
from vlmtune.training.features import compute_features
from vlmtune.training.trainer import ListDataset, VlmTrainer, training_arguments


@dataclass
class FitResult:
    model: object
    trainer: object
    seconds: float
    trainable: int
    total: int
    log_history: list = field(default_factory=list)


def encode_split(encoder: PromptAnswerTokenizer, dataset, desc: str) -> list[dict]:
    """Tokenize every row once (images decoded once); warn about answers cut by max_length."""
    examples, truncated = [], 0
    for i, row in enumerate(tqdm(dataset, desc=f"tokenizing {desc}", unit="sample")):
        example = encoder.encode(model_rgb(row["image"]), row["prompt"], row["answer"], where=f"{desc} row {i}")
        truncated += example.pop("truncated")
        examples.append(example)
    if truncated:
        print(f"warning: {truncated} {desc} answers were cut at data.max_length={encoder.max_length}")
    return examples


def uses_feature_cache(spec: FamilySpec, cfg: RunConfig) -> bool:
    plan = plan_for(spec, cfg.train.lora)
    vision_trains = plan.full or "vision" in cfg.train.lora.targets
    return cfg.train.feature_cache and spec.feature_cache and not vision_trains


def fit(model, spec: FamilySpec, dtype: torch.dtype, train: list[dict], evals: list[dict] | None,
        cfg: RunConfig, output_dir: str, pad_id: int, callbacks=(), resume: bool = False) -> FitResult:
    if uses_feature_cache(spec, cfg):
        compute_features(model, spec, train + (evals or []))
    from transformers import set_seed

    set_seed(cfg.train.seed)  # LoRA init draws from the global RNG: same seed, same adapter start
    model = apply_plan(model, spec, cfg.train.lora)
    trainable, total = trainable_share(model)
    print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")
    if cfg.train.save_steps >= 0:
        require_disk_room(Path(output_dir), trainable, total, plan_for(spec, cfg.train.lora).full)
    checkpoint = newest_valid_checkpoint(Path(output_dir)) if resume else None
    if resume and checkpoint is None:
        print(f"no complete checkpoint in {output_dir}: training from the start")
    callbacks = list(callbacks)
    if cfg.train.early_stopping_patience > 0 and evals:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    device = next(model.parameters()).device
    args = training_arguments(
        cfg.train, output_dir, bf16=autocast_bf16(cfg.train.bf16, device, dtype), has_eval=bool(evals),
        use_cpu=device.type == "cpu",
    )
    trainer = VlmTrainer(
        model=model, args=args, train_dataset=ListDataset(train), eval_dataset=ListDataset(evals) if evals else None,
        data_collator=Collator(pad_id, spec.seq_keys), spec=spec, projector_lr=cfg.train.projector_lr, callbacks=callbacks,
    )
    start = time.perf_counter()
    if checkpoint is not None:
        print(f"resuming from {checkpoint}")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return FitResult(model, trainer, time.perf_counter() - start, trainable, total, trainer.state.log_history)
