"""The fine-tuning routine shared by ``align`` (stage 1) and ``train`` (stage 2)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft.helpers import disable_input_dtype_casting
from torch.utils.data import Dataset

from vlmtune.config import AugmentConfig, RunConfig
from vlmtune.training.collate import Collator
from vlmtune.training.distributed import sharded
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.models.dtype import autocast_bf16, keep_fp32_masters
from vlmtune.models.lora import TrainPlan, apply_plan, plan_for, trainable_share
from vlmtune.models.family import FamilySpec
from vlmtune.training.checkpoints import newest_valid_checkpoint, require_disk_room
from vlmtune.errors import VlmtuneError
from vlmtune.training.examples import EncodedRows, Observer, cached_rows, observed
from vlmtune.training.features import compute_features, unwrap
from vlmtune.training.fused_lora import fused_lora
from vlmtune.training.schedule import scheduled
from vlmtune.training.trainer import ListDataset, VlmTrainer, training_arguments


@dataclass
class FitResult:
    model: object
    trainer: object
    seconds: float
    trainable: int
    total: int
    log_history: list = field(default_factory=list)
    epochs: float | None = None  # as trained: set, or chosen by train.step_budget


def encode_split(encoder: PromptAnswerTokenizer, dataset, desc: str, augment: AugmentConfig | None = None,
                 seed: int = 0) -> EncodedRows:
    """A split encoded lazily; ``fit`` (or ``ready``, called earlier) checks every row before training.
    ``augment``: train only (validation and test are never augmented). Each epoch's views follow
    from accelerate's DataLoader calling the dataset's ``set_epoch`` (a test guards it)."""
    return EncodedRows(encoder, dataset, desc, augment, seed)



@contextmanager
def training_attention(model, setting: str, device: torch.device):
    """Eager attention for the ``with`` block (the feature pass, trainer.train) where
    ``model.attn_implementation=auto`` trains on a CPU; the kernel the model was loaded with (SDPA)
    again afterwards, for generation.

    On a CPU, SDPA picks its flash kernel, whose backward was a quarter of the embedded default's
    step (30 calls of 21-24 ms at 8 x 95 tokens); eager attention computes the same softmax(QK^T)V
    1.2-1.3x faster per step there (bench/README.md). Generation has no backward: SDPA stays.
    """
    base = unwrap(model)
    before = base.config._attn_implementation
    switch = setting == "auto" and device.type == "cpu" and before != "eager"
    if switch:
        base.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            base.set_attn_implementation(before)


def uses_feature_cache(spec: FamilySpec, cfg: RunConfig, plan: TrainPlan | None = None) -> bool:
    plan = plan or plan_for(spec, cfg.train.lora)
    # FSDP unshards the projector only inside the model's forward; the cache calls it outside.
    return cfg.train.feature_cache and spec.feature_cache and not plan.trains_vision and sharded() != "fsdp"


def ready(model, spec: FamilySpec, cfg: RunConfig, examples, folder: Path | None = None,
          observe: Observer | None = None, plan: TrainPlan | None = None) -> Dataset:
    """What the Trainer draws from, every row encoded once by now (a bad row stops here).

    ``examples`` is an ``EncodedRows`` (lazy: the feature cache gets its one pass, otherwise the
    rows are checked), a dataset made ready before (returned as is) or a list of encoded examples.
    ``observe`` sees each example of that pass (pixels still in), so callers need no pass of their own.
    """
    cache = uses_feature_cache(spec, cfg, plan)
    if cache:  # the features the training forward would compute: under the attention it trains with
        with training_attention(model, cfg.model.attn_implementation, next(model.parameters()).device):
            return _ready(model, spec, examples, folder, observe, cache)
    return _ready(model, spec, examples, folder, observe, cache)


def _ready(model, spec: FamilySpec, examples, folder: Path | None, observe: Observer | None, cache: bool) -> Dataset:
    if isinstance(examples, list):  # encoded by the caller (tests, benchmarks): features in place
        examples = list(observed(examples, observe))
        return ListDataset(compute_features(model, spec, examples) if cache else examples)
    if isinstance(examples, EncodedRows):
        return cached_rows(model, spec, examples, folder, observe) if cache else examples.check(observe)
    return examples


def resume_checkpoint(output_dir: Path) -> Path:
    """The newest complete checkpoint; resuming without one is an error, never a silent restart."""
    checkpoint = newest_valid_checkpoint(output_dir)
    if checkpoint is None:
        raise VlmtuneError(
            f"{output_dir}: --resume found no complete checkpoint to continue from; "
            "start again without --resume (add --overwrite to replace the run)"
        )
    return checkpoint


def fit(model, spec: FamilySpec, dtype: torch.dtype, train, evals, cfg: RunConfig, output_dir: str, pad_id: int,
        callbacks=(), resume: bool | Path = False, plan: TrainPlan | None = None) -> FitResult:
    """Fine-tune on ``train`` (eval loss on ``evals``: a validation split, never test).

    ``train``/``evals``: see ``ready``. ``resume``: True for the newest complete checkpoint in
    ``output_dir`` (an error when there is none), or the checkpoint itself. ``plan``: the run's
    training plan (made from ``cfg.train.lora`` when not given).
    """
    plan = plan or plan_for(spec, cfg.train.lora)
    checkpoint = None if resume is False else resume if isinstance(resume, Path) else resume_checkpoint(Path(output_dir))
    train = ready(model, spec, cfg, train, Path(output_dir), plan=plan)
    evals = ready(model, spec, cfg, evals, Path(output_dir), plan=plan) if evals is not None and len(evals) else None
    cfg, line = scheduled(cfg, len(train))
    print(line)
    from transformers import set_seed

    set_seed(cfg.train.seed)  # LoRA init draws from the global RNG: same seed, same adapter start
    model = apply_plan(model, spec, plan)
    keep_fp32_masters(model, dtype)  # bf16 weights: projector & co. would lose small updates to rounding
    trainable, total = trainable_share(model)
    print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")
    if cfg.train.save_steps >= 0:
        require_disk_room(Path(output_dir), trainable, total, plan.full)
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
        model=model, args=args, train_dataset=train, eval_dataset=evals,
        data_collator=Collator(pad_id, spec.seq_keys), spec=spec, projector_lr=cfg.train.projector_lr, callbacks=callbacks,
    )
    start = time.perf_counter()
    if checkpoint is not None:
        print(f"resuming from {checkpoint}")
    # Under autocast PEFT's cast of every LoRA input to the adapter's fp32 (and autocast's cast
    # back to bf16 for the matmul) is an exact round trip: two copies of each input, forward and
    # backward, 12 % of a profiled CPU step, 1.08x per step when removed (bench/README.md). Every forward of trainer.train runs under
    # accelerate's autocast, so the casts are off for exactly that long. For as long, each LoRA
    # update is added inside its own addmm (training/fused_lora.py: 1.1x a CPU step); not where
    # FSDP or ZeRO-3 gather each module's weights only for that module's own forward.
    fuse = args.bf16 and sharded() is None
    with disable_input_dtype_casting(model, active=args.bf16), fused_lora(model, active=fuse), \
            training_attention(model, cfg.model.attn_implementation, device):
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return FitResult(model, trainer, time.perf_counter() - start, trainable, total, trainer.state.log_history,
                     cfg.train.epochs)
