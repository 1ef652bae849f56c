"""``vlmtune predict MODEL IMAGES... --output preds.jsonl``: batched answers for picture files.

MODEL is anything ``load_for_inference`` takes. A run directory also lends its defaults: the
prompt it trained with and its eval settings (max_new_tokens, beams...); options override them.
Pictures are checked before the model loads, so a typo fails in a second, naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vlmtune.config import EvalConfig
from vlmtune.data.pictures import check_picture, open_picture, picture_paths
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation.generate import generate_answers
from vlmtune.models.loading import load_for_inference
from vlmtune.run_dir import inference_config

CHUNK_BATCHES = 4  # decoded pictures held at once = batch_size * this (phone photos are large)


def option_overrides(max_new_tokens: int | None = None, batch_size: int | None = None, num_beams: int | None = None,
                     temperature: float | None = None, dtype: str | None = None) -> list[str]:
    """Command-line options as dotted overrides, validated by the config like any other."""
    given = {"eval.max_new_tokens": max_new_tokens, "eval.batch_size": batch_size, "eval.num_beams": num_beams,
             "model.dtype": dtype}
    items = [f"{k}={v}" for k, v in given.items() if v is not None]
    if temperature is not None and temperature < 0:
        raise VlmtuneError(f"--temperature {temperature}: must be >= 0 (0 = greedy)")
    if temperature is not None:  # 0 = greedy, as in most chat tools
        items.append(f"eval.do_sample={str(temperature > 0).lower()}")
        items += [f"eval.temperature={temperature}"] if temperature > 0 else []
    return items


def write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def run_predict(model: Path, images: list[Path], output: Path, prompt: str | None = None, overwrite: bool = False,
                overrides: list[str] | None = None) -> list[dict]:
    output = Path(output)
    if output.exists() and not overwrite:
        raise VlmtuneError(f"{output}: exists; pass --overwrite to replace it or choose another --output")
    paths = picture_paths(images)
    for path in paths:
        check_picture(path)
    cfg = inference_config(model, overrides or [])
    prompt = prompt or cfg.data.prompt
    net, processor, spec = load_for_inference(model, dtype=cfg.model.dtype)
    rows = predict_files(net, processor, spec, paths, prompt, cfg.eval, output)
    print(f"{len(rows)} predictions written to {output}")
    return rows


def predict_files(net, processor, spec, paths: list[Path], prompt: str, cfg: EvalConfig, output: Path) -> list[dict]:
    """Generate chunk by chunk into a temporary file that replaces ``output`` only when complete."""
    tmp = output.with_name(f".{output.name}.partial-{os.getpid()}")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp.unlink(missing_ok=True)
    rows: list[dict] = []
    chunk = cfg.batch_size * CHUNK_BATCHES
    try:
        for start in range(0, len(paths), chunk):
            part = paths[start : start + chunk]
            answers = generate_answers(net, processor, spec, [open_picture(p) for p in part], [prompt] * len(part), cfg,
                                       desc=f"predicting {start + len(part)}/{len(paths)}")
            new = [{"image": str(p), "prompt": prompt, "prediction": a} for p, a in zip(part, answers)]
            write_rows(tmp, new)
            rows += new
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return rows
