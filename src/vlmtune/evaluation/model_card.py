"""The README.md model card of a merged model, written from the run directory's own records.

Everything comes from files the run already wrote (config.yaml, data.json, metrics.json: the merge
stage reads them and passes them in) plus the merge provenance, so the card states what was
trained and measured rather than what was intended.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from vlmtune.evaluation.report import summary_rows
from vlmtune.data.schema import DEFAULT_PROMPT

HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def front_matter(info: dict) -> str:
    lines = ["---", "library_name: transformers", "pipeline_tag: image-text-to-text", "tags:", "- vlmtune", "- lora",
             "- merged"]
    base = info["base_model"]
    # The Hub validates base_model: only name a hub id, never a local path or the embedded model.
    if HUB_ID.fullmatch(base) and not Path(base).exists():
        lines.append(f"base_model: {base}")
    return "\n".join(lines + ["---"])


def base_section(info: dict) -> str:
    embedded = info["base_model"] == "default"
    base = "the embedded vlmtune default model (DINOv2 + SmolLM2)" if embedded else f"`{info['base_model']}`"
    lora = info["lora"]
    trained = "the projector trained whole" if lora.get("modules_to_save") else "no module trained whole"
    lines = [f"- base model: {base}", f"- family: {info['family']}", f"- weights dtype: {info['dtype']} (the base's own)",
             f"- LoRA rank {lora.get('r')}, alpha {lora.get('lora_alpha')}, {trained}; merged into the weights"]
    if info.get("trained_quantization", "none") != "none":
        lines.append(f"- trained on a {info['trained_quantization']} base, merged into the full-precision base")
    return "## Base model\n\n" + "\n".join(lines)


def data_section(data: dict | None) -> str:
    if not data:
        return "## Data\n\nNot recorded (merged from a bare adapter folder)."
    rows = [f"| {split} | {d.get('rows')} | `{d.get('fingerprint')}` |" for split, d in data.items()]
    return "## Data\n\n| split | rows | fingerprint |\n|---|---|---|\n" + "\n".join(rows)


def metrics_section(metrics: dict | None) -> str:
    if not metrics or not metrics.get("after"):
        return "## Results\n\nNo evaluation recorded."
    rows = [f"| {r['metric']} | {r['before']} | {r['after']} | {r['delta']} |"
            for r in summary_rows(metrics.get("before"), metrics["after"])]
    rows_note = f" ({metrics['test_rows']} test pictures)" if metrics.get("test_rows") else ""
    return (f"## Results on the held-out test split{rows_note}\n\n| metric | before | after | change |\n"
            "|---|---|---|---|\n" + "\n".join(rows))


def config_section(config_text: str | None) -> str:
    if not config_text:
        return ""
    return "## Training config\n\n```yaml\n" + config_text.rstrip() + "\n```"


def usage_section(model_ref: str, prompt: str) -> str:
    return f"""## Use with plain transformers

```python
from transformers import pipeline

pipe = pipeline("image-text-to-text", model="{model_ref}")
messages = [{{"role": "user", "content": [
    {{"type": "image", "path": "photo.jpg"}},
    {{"type": "text", "text": {json.dumps(prompt, ensure_ascii=False)}}},
]}}]
print(pipe(text=messages, max_new_tokens=64, return_full_text=False)[0]["generated_text"])
```

or `AutoModelForImageTextToText.from_pretrained("{model_ref}")` with `AutoProcessor`. Ask the
question the model was trained with (above) for the answers its results describe. Photos should
be upright 8-bit RGB (apply the EXIF orientation), as vlmtune fed them in training."""


def model_card(info: dict, records: dict, model_ref: str) -> str:
    """Markdown card; ``records`` holds the run's config_text, data and metrics (empty for a bare adapter)."""
    config_text, data, metrics = records.get("config_text"), records.get("data"), records.get("metrics")
    prompt, asked = _trained_prompt(config_text)
    parts = [front_matter(info), f"# {Path(model_ref).name}",
             f"A vision-language model fine-tuned with vlmtune (LoRA), merged into its base. {asked}",
             base_section(info), data_section(data), metrics_section(metrics), config_section(config_text),
             usage_section(model_ref, prompt),
             f"## Provenance\n\nMerged {info['merged_at']} from `{info['source']}` ({info['source_kind']}); "
             "details in `vlmtune_merged.json`."]
    return "\n\n".join(p for p in parts if p) + "\n"


def _trained_prompt(config_text: str | None) -> tuple[str, str]:
    """(prompt for the usage example, sentence saying what the model was asked in training)."""
    import yaml

    data = (yaml.safe_load(config_text) or {}).get("data", {}) if config_text else {}
    if data.get("prompt_column"):
        return DEFAULT_PROMPT, f"Trained on per-picture questions (column `{data['prompt_column']}`)."
    if not data.get("prompt"):
        return DEFAULT_PROMPT, "Training prompt not recorded."
    return data["prompt"], f"Training prompt: {json.dumps(data['prompt'], ensure_ascii=False)}"
