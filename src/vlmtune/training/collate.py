"""Right-padding and stacking of tokenized samples into training batches."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlmtune.models.prompting import IGNORE, pad_seq


def _cat(values: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-sample image tensors on dim 0, zero-padding ragged dims (e.g. tile counts)."""
    shape = [max(v.shape[d] for v in values) for d in range(values[0].dim())]
    if all(list(v.shape[1:]) == shape[1:] for v in values):
        return torch.cat(values)
    padded = []
    for v in values:
        pad = []
        for d in reversed(range(1, v.dim())):
            pad += [0, shape[d] - v.shape[d]]
        padded.append(torch.nn.functional.pad(v, pad))
    return torch.cat(padded)


@dataclass
class Collator:
    """Right-pads token sequences for training; stacks image inputs (or cached vision features).

    Tensors named in ``seq_keys`` are aligned with input_ids on dim 1 (shape [1, seq, ...]) and
    are right-padded with zeros to the batch's longest sequence.
    """

    pad_id: int
    seq_keys: tuple[str, ...] = ()

    def __call__(self, examples: list[dict]) -> dict:
        longest = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), longest), self.pad_id, dtype=torch.long)
        labels = torch.full((len(examples), longest), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(examples), longest), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            ids[i, :n] = torch.tensor(e["input_ids"])
            labels[i, :n] = torch.tensor(e["labels"])
            mask[i, :n] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        skip = {"input_ids", "labels", "truncated"}
        for key in examples[0]:
            if key in self.seq_keys:
                batch[key] = _cat([pad_seq(e[key], longest) for e in examples])
            elif key not in skip and isinstance(examples[0][key], torch.Tensor):
                batch[key] = _cat([e[key] for e in examples])
        return batch


