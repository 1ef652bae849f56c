"""One resolution knob, ``model.max_image_tokens``, for every family, and the image-token counts printed before work.

A phone photo is 12 MP: at a checkpoint's own settings Qwen2-VL turns it into 15,552 image
tokens, LLaVA-NeXT into ~2.3k, Idefics3 into 13 sub-images. Each family maps the budget onto its
processor's own arguments (``FamilyHooks.limit_image_tokens``); the processor, saved with the run,
keeps them, and ``load_model`` applies the recorded budget again for evaluation, chat and merge,
so generation sees the image-token count training saw.
"""

from __future__ import annotations

from collections.abc import Iterable

from PIL import Image

from vlmtune.errors import VlmtuneError
from vlmtune.models.family import FamilySpec
from vlmtune.models.prompting import PromptAnswerTokenizer


def image_token_ids(processor) -> set[int]:
    """The ids the model fills with image features: ProcessorMixin's image_token_ids (Gemma 3's soft
    tokens, not its <start_of_image> placeholder), else the processor's image token."""
    ids = {i for i in getattr(processor, "image_token_ids", None) or [] if i is not None}
    if not ids:
        token_id = getattr(processor, "image_token_id", None)
        ids = {token_id if token_id is not None else processor.tokenizer.convert_tokens_to_ids(processor.image_token)}
    return ids


def image_tokens_in(processor, input_ids) -> int:
    """Image-feature positions in one sequence (cross-attention families: one per picture)."""
    ids = input_ids.tolist() if hasattr(input_ids, "tolist") else list(input_ids)
    wanted = image_token_ids(processor)
    return sum(1 for i in ids if i in wanted)


def fixed_image_tokens(processor, spec: FamilySpec) -> int:
    """Image tokens of one picture through the family's prompt path (families with a fixed count)."""
    enc = PromptAnswerTokenizer(processor, spec).encode_prompts([Image.new("RGB", (64, 48))], ["x"])
    return image_tokens_in(processor, enc["input_ids"][0])


def limit_image_tokens(spec: FamilySpec, processor, model_config, max_image_tokens: int | None) -> dict | None:
    """Fit ``processor`` (and ``model_config`` where the model reads the same setting) to the budget.

    None leaves the checkpoint's settings. Returns what was set, with ``image_tokens`` (the most
    any picture can get now), and prints it on one line.
    """
    if max_image_tokens is None:
        return None
    info = spec.hooks.limit_image_tokens(processor, model_config, max_image_tokens)
    if "image_tokens" not in info:  # nothing to set: the family's count is fixed
        count = fixed_image_tokens(processor, spec)
        if count > max_image_tokens:
            raise VlmtuneError(f"model.max_image_tokens={max_image_tokens}: {spec.name} gives every picture a fixed "
                               f"{count} image tokens; set at least {count} or leave it unset")
        info = {"image_tokens": count, "fixed": True}
    settings = ", ".join(f"{k}={v}" for k, v in info.items() if k not in ("image_tokens", "fixed"))
    how = "fixed by the checkpoint" if info.get("fixed") else settings
    print(f"image tokens: at most {info['image_tokens']} per picture for model.max_image_tokens={max_image_tokens} "
          f"({spec.name}: {how})")
    return info


def sequence_stats(processor, examples: Iterable[dict]) -> dict:
    """Image tokens per picture (min/max) and sequence lengths over encoded examples."""
    counts, lengths = [], []
    for example in examples:
        counts.append(image_tokens_in(processor, example["input_ids"]))
        lengths.append(len(example["input_ids"]))
    if not counts:
        return {"rows": 0}
    return {"rows": len(counts), "image_tokens_min": min(counts), "image_tokens_max": max(counts),
            "longest": max(lengths)}


def sequence_line(stats: dict, split: str, max_length: int) -> str:
    if not stats["rows"]:
        return f"{split}: no rows"
    lo, hi = stats["image_tokens_min"], stats["image_tokens_max"]
    tokens = f"{lo}" if lo == hi else f"{lo}-{hi}"
    return (f"{split}: {tokens} image tokens per picture, longest sequence {stats['longest']} tokens "
            f"(data.max_length={max_length}), {stats['rows']} rows")


def print_sequence_stats(processor, examples: Iterable[dict], split: str, max_length: int) -> dict:
    """One line before any work: what the pictures cost in tokens, and how close to max_length."""
    stats = sequence_stats(processor, examples)
    print(sequence_line(stats, split, max_length))
    return stats
