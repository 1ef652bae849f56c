"""HF ``Trainer`` wiring: answer-only loss computed on answer positions only, cached features.

Two things stock ``Trainer`` does not do, and why we do them:
- The LM head (vocab x hidden, the single largest matmul for a small LM) is evaluated only where
  a label is supervised, via ``logits_to_keep`` as a boolean mask: the answer is a handful of
  tokens after ~80 prompt/image tokens.
- With a frozen vision tower, precomputed vision features replace pixels (see ``features``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from vlmtune.config import TrainConfig
from vlmtune.errors import VlmtuneError
from vlmtune.models.prompting import IGNORE
from vlmtune.models.family import FamilySpec
from vlmtune.training.features import FEATURES, encoder_outputs
from vlmtune.training.trackers import PROJECT, run_name


class ListDataset(Dataset):
    def __init__(self, examples: list[dict]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        return self.examples[i]


def answer_loss(model, spec: FamilySpec, inputs: dict, num_items: int | torch.Tensor | None = None):
    """Sum of next-token cross-entropy over supervised positions / number of such positions."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    features = inputs.pop(FEATURES, None)
    if features is not None:
        inputs["mm_encoder_outputs"] = encoder_outputs(model, spec, features)
    targets = labels[:, 1:]
    supervised = targets[targets != IGNORE]
    if spec.logits_to_keep:
        keep = F.pad(targets != IGNORE, (0, 1), value=False)  # position t predicts token t+1
        outputs = model(**inputs, logits_to_keep=keep, use_cache=False)
        logits = outputs.logits.reshape(-1, outputs.logits.shape[-1])
    else:  # families whose forward takes no boolean logits_to_keep: slice after the LM head
        outputs = model(**inputs, use_cache=False)
        logits = outputs.logits[:, :-1][targets != IGNORE]
    loss = F.cross_entropy(logits.float(), supervised, reduction="sum")
    return loss / (num_items if num_items is not None else max(supervised.numel(), 1)), outputs


class VlmTrainer(Trainer):
    def __init__(self, *args, spec: FamilySpec, projector_lr: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.spec = spec
        self.projector_lr = projector_lr
        # compute_loss normalises by the token count of the whole accumulated batch itself.
        self.model_accepts_loss_kwargs = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = answer_loss(model, self.spec, inputs, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self, model=None):
        """Trainer's own optimizer (train.optim, betas, epsilon, no decay on biases and norms);
        with ``projector_lr`` each of its groups is split so whole-trained parameters get that rate."""
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if fresh and self.projector_lr is not None:
            whole = {id(p) for n, p in (model or self.model).named_parameters() if p.requires_grad and "lora_" not in n}
            split_learning_rates(optimizer, whole, self.projector_lr, self.args.optim)
        return optimizer


def split_learning_rates(optimizer, whole: set[int], lr: float, optim: str) -> None:
    """Split every param group in two, the ``whole`` parameters at ``lr``; other settings kept.

    Done on the optimizer Trainer built, before its first step (no state yet), so everything
    Trainer sets up (decay groups, optimizer kwargs, bitsandbytes overrides) stays as it is.
    """
    groups = []
    for group in optimizer.param_groups:
        for at_lr in (False, True):
            params = [p for p in group["params"] if (id(p) in whole) == at_lr]
            if params:
                groups.append({**group, "params": params, **({"lr": lr} if at_lr else {})})
    if not whole <= {id(p) for g in groups for p in g["params"]} or not hasattr(optimizer, "add_param_group"):
        raise VlmtuneError(f"train.optim={optim} manages its own parameter groups and cannot give the projector "
                           "its own learning rate; unset train.projector_lr")
    optimizer.param_groups.clear()
    for group in groups:
        optimizer.add_param_group(group)


def training_arguments(cfg: TrainConfig, output_dir: str, bf16: bool, has_eval: bool, use_cpu: bool) -> TrainingArguments:
    eval_on = has_eval and (cfg.eval_each_epoch or cfg.early_stopping_patience > 0)
    save_strategy = "no" if cfg.save_steps < 0 else "steps" if cfg.save_steps > 0 else "epoch"
    return TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=cfg.epochs if cfg.epochs is not None else 1.0,  # None only beside max_steps (which wins)
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        optim=cfg.optim,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        adam_epsilon=cfg.adam_epsilon,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=bf16,
        use_cpu=use_cpu,
        activation_checkpointing=cfg.gradient_checkpointing,
        # Non-reentrant checkpointing keeps gradients flowing into LoRA layers of a frozen vision
        # tower (the reentrant variant drops them when the block's inputs need no grad).
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        logging_steps=cfg.logging_steps,
        save_strategy=save_strategy,
        save_steps=cfg.save_steps if cfg.save_steps > 0 else 500,
        save_total_limit=cfg.save_total_limit,
        eval_strategy=("steps" if cfg.save_steps > 0 else "epoch") if eval_on else "no",
        eval_steps=cfg.save_steps if cfg.save_steps > 0 else None,
        load_best_model_at_end=cfg.early_stopping_patience > 0 and has_eval,
        metric_for_best_model="eval_loss",
        prediction_loss_only=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to],
        project=PROJECT,  # trackio's project; the run name lets log_results reopen the run after training
        run_name=run_name(output_dir),
        disable_tqdm=False,
    )
