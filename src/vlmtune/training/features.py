"""Frozen-vision feature cache: run the vision tower once per image instead of once per step.

With the vision tower frozen (no vision LoRA) its output for a picture never changes, and on a
CPU it is most of a training step. We compute the selected vision features once with the
family's own ``get_image_features`` (the projector's input is captured, so layer selection and
CLS handling are exactly the model's), then feed ``projector(features)`` back through the public
``mm_encoder_outputs`` argument of the model's forward. Features are computed in the vision
tower's dtype (bf16 when training on a bf16 CPU or GPU) and stored in fp32; for many pictures a
``FeatureStore`` holds them on disk instead of in memory.
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate.utils import extract_model_from_parallel
from tqdm.auto import tqdm

from vlmtune.models.family import FamilySpec

FEATURES = "vision_features"


def unwrap(model):
    """The transformers model inside a PEFT model and a DDP / DeepSpeed wrapper (what Trainer's
    compute_loss gets under ``accelerate launch``)."""
    model = extract_model_from_parallel(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextmanager
def projector_inputs(model, spec: FamilySpec):
    """Collects what the projector is fed during the ``with`` block: the selected vision features.

    A hook, not a replaced module: connectors such as Aya Vision's pixel shuffle live inside the
    projector and reshape its output by the LM width, so an identity stand-in would hand back
    features silently reshaped to the wrong token count.
    """
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(spec.projector_modules[0]).register_forward_pre_hook(
        lambda module, args: seen.append(args[0]))
    try:
        yield seen
    finally:
        handle.remove()


class FeatureStore:
    """Per-picture feature tensors in an unnamed temporary file, read back one picture at a time.

    At 256 patches x 384 dims in fp32 (the default, 224 px) a picture's features are 393 KB:
    4,000 pictures would hold 1.6 GB of RAM. Reads use ``pread``, not ``mmap``: mapped pages that
    were touched count in the process's resident memory, pages read through the page cache do not. The file
    has no name (``TemporaryFile``), so a crash leaves nothing behind.
    """

    def __init__(self, folder: Path | None = None):
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
        self._file = tempfile.TemporaryFile(dir=folder)
        self._index: list[tuple[int, tuple[int, ...]]] = []
        self._end = 0

    def __len__(self) -> int:
        return len(self._index)

    def append(self, tensor: torch.Tensor) -> None:
        data = tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        os.pwrite(self._file.fileno(), data, self._end)
        self._index.append((self._end, tuple(tensor.shape)))
        self._end += len(data)

    def __getitem__(self, i: int) -> torch.Tensor:
        offset, shape = self._index[i]
        size = 4 * math.prod(shape)
        return torch.frombuffer(bytearray(os.pread(self._file.fileno(), size, offset)), dtype=torch.float32).reshape(shape)


def _chunks(examples: Iterable[dict], size: int) -> Iterator[list[dict]]:
    it = iter(examples)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


@torch.no_grad()
def compute_features(model, spec: FamilySpec, examples: Iterable[dict], batch_size: int = 16,
                     store: FeatureStore | None = None, total: int | None = None) -> list[dict]:
    """Replace each example's ``pixel_values`` by its selected vision features and return the examples.

    Without ``store`` the features go into each example (in place); with it they are appended
    to the store in order and the returned examples carry none. ``examples`` may be a generator
    (examples encoded on the fly), so pixels are only ever held for one batch.
    """
    base = unwrap(model)
    device, dtype = base.device, next(base.model.vision_tower.parameters()).dtype
    total = total if total is not None else (len(examples) if hasattr(examples, "__len__") else None)
    done = []
    with projector_inputs(base, spec) as seen, tqdm(total=total, desc="vision features", unit="picture") as bar:
        for chunk in _chunks(examples, batch_size):
            views = [e.pop("pixel_values") for e in chunk]  # [views, 3, H, W] each: tiles where a family tiles
            base.model.get_image_features(pixel_values=torch.cat(views).to(device, dtype))
            feats = torch.cat(seen)
            seen.clear()
            for e, f in zip(chunk, feats.split([len(v) for v in views])):
                if store is None:
                    e[FEATURES] = f.float().cpu()
                else:
                    store.append(f)
            done += chunk
            bar.update(len(chunk))
    return done


def encoder_outputs(model, spec: FamilySpec, features: torch.Tensor) -> dict:
    """``mm_encoder_outputs`` for a batch of cached features: the (trainable) projector applied."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    projector = unwrap(model).get_submodule(spec.projector_modules[0])
    projected = projector(features.to(next(projector.parameters()).dtype))
    # LLaVA concatenates a per-picture list; Aya Vision scatters one [views, tokens, dim] tensor.
    pooled = projected if spec.pooled_as_tensor else list(projected)
    return {"image": BaseModelOutputWithPooling(pooler_output=pooled)}
