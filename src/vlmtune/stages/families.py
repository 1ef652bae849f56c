"""``vlmtune families``: every registry row, what it supports, its presets and what it was checked on."""

from __future__ import annotations

from vlmtune.models.registry import UNSUPPORTED, family_table


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def family_lines() -> list[str]:
    """One block per row, the generic row last."""
    lines = []
    for row in family_table():
        checked = "; ".join(f"{ckpt} ({how})" for ckpt, how in row["verified"]) or "tiny random models only"
        lines += [
            f"{row['family']}: {', '.join(row['model_types'])} ({row['model_class']})",
            f"  supports: vision LoRA {_yes(row['vision_lora'])}, projector {', '.join(row['projector'])}, "
            f"feature cache {_yes(row['feature_cache'])}, logits_to_keep {_yes(row['logits_to_keep'])}, "
            f"model.max_image_tokens {row['resolution']}",
            f"  presets: {', '.join(row['presets']) or 'none'}",
            f"  verified on: {checked}",
            f"  notes: {row['notes']}",
        ]
    lines += [f"refused: {model_type}: {why}" for model_type, why in sorted(UNSUPPORTED.items())]
    return lines


def run_families() -> None:
    print("\n".join(family_lines()))
    print("verified: shapes = the published config built on the meta device (parameter count, exact LoRA targets); "
          "tokenizer = prompts and labels with its chat template and a real tokenizer of its kind; trained = "
          "fine-tuned end to end. Every row is also tested on a tiny random model.")
