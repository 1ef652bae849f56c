"""``vlmtune predict MODEL IMAGES... --output preds.jsonl``: batched answers for picture files.

MODEL is anything ``load_for_inference`` takes. A run directory also lends its defaults: the
prompt it trained with and its eval settings (max_new_tokens, beams...); options override them.
Pictures are checked before the model loads, so a typo fails in a second, naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from PIL import Image

from vlmtune.config import EvalConfig, RunConfig, load_config
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation.generate import generate_answers
from vlmtune.models.loading import load_for_inference, read_run_info

CHUNK_BATCHES = 4  # decoded pictures held at once = batch_size * this (phone photos are large)


def picture_paths(items: list[Path]) -> list[Path]:
    """Files as given, folders expanded to the pictures below them (sorted); missing ones refused."""
    from vlmtune.data.images import list_images

    paths: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = [item / name for name in list_images(item)]
            if not found:
                raise VlmtuneError(f"{item}: folder holds no pictures")
            paths += found
        elif item.is_file():
            paths.append(item)
        else:
            raise VlmtuneError(f"{item}: no such file")
    if not paths:
        raise VlmtuneError("no pictures given")
    return paths


def check_picture(path: Path) -> None:
    """Header checks only (no decoding): missing plugin, not an image, corrupt header, bomb guard."""
    from vlmtune.data.images import UnusableImage, open_image

    try:
        with open_image(path):
            pass
    except UnusableImage as err:
        raise VlmtuneError(f"{path}: {err.reason}") from None
    except OSError as err:
        raise VlmtuneError(f"{path}: cannot read ({err.strerror or err})") from None


def open_picture(path: str | Path) -> Image.Image:
    """What the model sees: decoded, EXIF-upright 8-bit RGB (HEIC via the pillow-heif plugin)."""
    from vlmtune.data.images import UnusableImage, decode, model_rgb, open_image

    path = Path(path)
    if not path.is_file():
        raise VlmtuneError(f"{path}: no such file")
    try:
        with open_image(path) as im:
            decode(im)
            rgb = model_rgb(im)
            return rgb.copy() if rgb is im else rgb  # closing the file would invalidate ``im`` itself
    except UnusableImage as err:
        raise VlmtuneError(f"{path}: {err.reason}") from None
    except OSError as err:
        raise VlmtuneError(f"{path}: cannot read ({err.strerror or err})") from None


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


def model_config(model: Path, overrides: list[str]) -> RunConfig:
    """A run's own config (its prompt and eval settings) as the defaults, else vlmtune's."""
    run_config = Path(model) / "config.yaml"
    is_run = bool(read_run_info(Path(model))) and run_config.is_file()
    return load_config(run_config if is_run else None, overrides)


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
    cfg = model_config(model, overrides or [])
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
