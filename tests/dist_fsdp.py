"""A few LoRA steps on the tiny LLaVA, sharded with FSDP2 when started by torchrun (gloo on CPUs).

    python tests/dist_fsdp.py MODEL_DIR OUT.json                          # one process, batch 4
    torchrun --nproc_per_node 2 tests/dist_fsdp.py MODEL_DIR OUT.json     # two processes, 2 + 2

accelerate enables FSDP only on accelerators, so on a CPU this wraps the model itself the way
configs/accelerate/fsdp.yaml asks accelerate to (FSDP2, TRANSFORMER_BASED_WRAP: every module
whose class is in the model's ``_no_split_modules``, then the root), and runs vlmtune's own
pieces: ``load_model``, ``apply_plan`` (LoRA + projector trained whole) and ``answer_loss``
normalised by the global answer-token count, scaled by the process count as ``VlmTrainer`` does.
Writes the global loss of each step (rank 0).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

import tiny  # noqa: E402
from vlmtune.config import ModelConfig, load_config  # noqa: E402
from vlmtune.models.loading import load_model  # noqa: E402
from vlmtune.models.lora import apply_plan  # noqa: E402
from vlmtune.models.prompting import PromptAnswerTokenizer  # noqa: E402
from vlmtune.training.collate import Collator  # noqa: E402
from vlmtune.training.trainer import answer_loss  # noqa: E402

STEPS, GLOBAL_BATCH = 3, 4


def shard(model) -> int:
    from torch.distributed.fsdp import fully_shard

    classes = set(getattr(model.get_base_model(), "_no_split_modules", None) or [])
    units = [m for m in model.modules() if type(m).__name__ in classes]
    for unit in units:
        fully_shard(unit)
    fully_shard(model)
    return len(units)


def main(model_dir: str, out: str) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    cfg = load_config(overrides=[f"model.name={model_dir}", "train.lora.targets=lm+projector", "train.lora.dropout=0"])
    model, processor, spec, _ = load_model(ModelConfig(name=model_dir), training=True, device=torch.device("cpu"))
    torch.manual_seed(0)
    model = apply_plan(model, spec, cfg.train.lora)
    units = shard(model) if world > 1 else 0
    encoder = PromptAnswerTokenizer(processor, spec, 256)
    pictures = [Image.new("RGB", (32, 32), ((37 * i) % 256, (91 * i) % 256, 53)) for i in range(GLOBAL_BATCH)]
    examples = [encoder.encode(p, "describe this picture", c) for p, c in zip(pictures, tiny.CAPTIONS)]
    collate = Collator(processor.tokenizer.pad_token_id)
    mine = examples[rank * GLOBAL_BATCH // world:(rank + 1) * GLOBAL_BATCH // world]
    batch = collate(mine)
    total = int((collate(examples)["labels"][:, 1:] != -100).sum())  # answer tokens of the global batch
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    model.train()
    for _ in range(STEPS):
        loss = answer_loss(model, spec, batch, total)[0] * world  # FSDP averages gradients over processes
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = loss.detach() / world
        if world > 1:
            dist.all_reduce(value)
        losses.append(float(value))
    if rank == 0:
        Path(out).write_text(json.dumps({"world": world, "units": units, "losses": losses}))
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
