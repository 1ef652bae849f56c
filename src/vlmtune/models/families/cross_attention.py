"""Cross-attention families (IDEFICS v1, Mllama): the picture reaches the LM through a text-aligned mask.

Their processors return, for the prompt only, which image each token may attend to:
``image_attention_mask`` [1, seq, n_images] or ``cross_attention_mask`` [1, seq, n_images, n_tiles].
At generation ``generate()`` extends such a mask by repeating its last row for every new token, so
answer tokens see the picture as the last prompt token does. Training must do the same, or the
answer would be learnt blind (a zero row switches cross-attention off for that token).
"""

from __future__ import annotations

from dataclasses import replace


def extend_over_answer(encoder, image, prompt: str, answer: str, where: str = "sample") -> dict:
    """encode_hook: the default encoding, each ``seq_keys`` mask extended over the answer tokens."""
    import torch

    # The plain encoding (same processor call, labels and max_length check), masks left as the processor made them.
    plain = replace(encoder, spec=replace(encoder.spec, encode_hook=None, seq_keys=()))
    example = plain.encode(image, prompt, answer, where)
    for key in encoder.spec.seq_keys:
        mask = example[key]
        extra = len(example["input_ids"]) - mask.shape[1]
        example[key] = torch.cat([mask, mask[:, -1:].expand(-1, extra, *mask.shape[2:])], dim=1)
    return example
