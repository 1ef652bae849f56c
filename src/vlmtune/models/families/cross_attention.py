"""Cross-attention families (IDEFICS v1, Mllama): the picture reaches the LM through a text-aligned mask.

Their processors return, for the prompt only, which image each token may attend to:
``image_attention_mask`` [1, seq, n_images] or ``cross_attention_mask`` [1, seq, n_images, n_tiles].
At generation ``generate()`` extends such a mask by repeating its last row for every new token, so
answer tokens see the picture as the last prompt token does. Training must do the same, or the
answer would be learnt blind (a zero row switches cross-attention off for that token).
"""

from __future__ import annotations

import torch

from vlmtune.models.family import FamilyHooks


def extend_over_answer(example: dict, keys: tuple[str, ...]) -> dict:
    """``example`` with each mask in ``keys`` extended over the answer by repeating its last prompt row.

    The standard encoding has zero-padded them over the answer (right for token-type ids, wrong here).
    """
    example = dict(example)
    for key in keys:
        mask = example[key]
        prompt_len = int(len(example["input_ids"]) - (torch.tensor(example["labels"]) != -100).sum())
        mask = mask[:, :prompt_len]
        extra = len(example["input_ids"]) - prompt_len
        example[key] = torch.cat([mask, mask[:, -1:].expand(-1, extra, *mask.shape[2:])], dim=1)
    return example


class CrossAttentionHooks(FamilyHooks):
    """Answer tokens attend to the picture as the last prompt token does (as at generation)."""

    def encode(self, tok, image, prompt: str, answer: str, where: str) -> dict:
        return extend_over_answer(tok.standard_encode(image, prompt, answer, where), tok.spec.seq_keys)
