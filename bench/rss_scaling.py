"""Peak resident memory of a short fine-tune of the embedded default model vs the number of pictures.

    python bench/rss_scaling.py [--sizes 400,4000] [--modes lazy[,eager]] [--feature-cache]

Each (mode, size) runs in a fresh process: load the default model, open a caption folder of
``size`` training pictures (224 px JPEGs of random blocks, 8 test pictures), make the examples,
then ``fit`` for 2 steps of batch 2; the process reports its own peak RSS (``ru_maxrss``).

- ``lazy``: what ``vlmtune train`` does (``training/examples.py``): every row encoded once up
  front to check it, nothing held; the Trainer encodes (or, with the feature cache, reads the
  features of) each row when it draws it.
- ``eager``: the old way: every row encoded up front and held, pixels included.

Without ``--feature-cache`` the vision tower runs on every step (``train.feature_cache=false``):
with it, the up-front pass also runs DINOv2 on every picture (~0.1 s each on 2 CPU cores), which
is too slow for 4,000 pictures here; use e.g. ``--sizes 100,400 --feature-cache`` for that path.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEST_PICTURES = 8
# One caption for every picture: every batch then has the same shapes, so the peak of a training
# step does not depend on which rows were drawn (with three captions of different lengths, two
# processes of the same size differed by up to 180 MB in their step peak).
CAPTION = "a black knight and a white pawn"


def pictures(folder: Path, n: int) -> list[str]:
    """``n`` distinct 224 px JPEGs (random 8x8 blocks, so JPEG cannot shrink them to nothing)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        name = f"pic_{i:05d}.jpg"
        if not (folder / name).is_file():
            blocks = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
            Image.fromarray(blocks).save(folder / name, quality=90)
        names.append(name)
    return names


def caption_folder(root: Path, pool: Path, names: list[str], size: int) -> Path:
    """``size`` train + TEST_PICTURES test rows; pictures hard-linked from the shared pool."""
    folder = root / f"n{size}"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, name in enumerate(names[: size + TEST_PICTURES]):
        if not (folder / name).exists():
            os.link(pool / name, folder / name)
        rows.append({"file_name": name, "caption": CAPTION, "split": "test" if i < TEST_PICTURES else "train"})
    with open(folder / "captions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file_name", "caption", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return folder


def child(mode: str, data: Path, out: Path, feature_cache: bool) -> None:
    """One measurement, in its own process (the peak RSS of a process never goes down)."""
    from vlmtune.config import load_config
    from vlmtune.data.schema import TRAIN
    from vlmtune.models.loading import load_model
    from vlmtune.models.prompting import PromptAnswerTokenizer
    from vlmtune.data.run_data import open_dataset
    from vlmtune.training.examples import encode_row
    from vlmtune.training.fit import encode_split, fit, ready

    start = time.perf_counter()
    cfg = load_config(overrides=[
        "model.name=default", f"data.path={data}", f"output_dir={out}", "train.max_steps=2", "train.batch_size=2",
        "train.save_steps=-1", "train.eval_each_epoch=false", "train.logging_steps=1", "data.max_length=256",
        f"train.feature_cache={str(feature_cache).lower()}", "train.lora.dropout=0"])
    model, processor, spec, dtype = load_model(cfg.model, training=True)
    times = {"load": time.perf_counter() - start}
    rows = open_dataset(cfg)[TRAIN]
    encoder = PromptAnswerTokenizer(processor, spec, cfg.data.max_length)
    if mode == "eager":
        examples = [encode_row(encoder, rows[i], f"train row {i}") for i in range(len(rows))]
    else:
        examples = ready(model, spec, cfg, encode_split(encoder, rows, TRAIN), out)
    times["examples"] = time.perf_counter() - start - sum(times.values())
    fit(model, spec, dtype, examples, None, cfg, str(out), processor.tokenizer.pad_token_id)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"mode": mode, "pictures": len(rows), "peak_rss_mb": round(peak_mb),
                      "seconds": round(time.perf_counter() - start, 1),
                      **{f"{k}_s": round(v, 1) for k, v in times.items()}}))


def measure(mode: str, data: Path, out: Path, feature_cache: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(data), str(out)] + (["--feature-cache"] if feature_cache else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{mode} on {data} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="400,4000")
    ap.add_argument("--modes", default="lazy", help="lazy,eager adds the old way side by side (about twice the time)")
    ap.add_argument("--feature-cache", action="store_true")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], Path(args.child[1]), Path(args.child[2]), args.feature_cache)
    from vlmtune.models.default import ensure_default_base

    ensure_default_base()  # composed once into the cache, outside the measured processes
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = pictures(root / "pool", max(sizes) + TEST_PICTURES)
        results = [measure(mode, caption_folder(root, root / "pool", names, n), root / f"out-{mode}-{n}", args.feature_cache)
                   for mode in args.modes.split(",") for n in sizes]
    print(f"feature cache {'on' if args.feature_cache else 'off'}; 2 steps of batch 2; peak RSS per process")
    for r in results:
        print(f"{r['mode']:6} {r['pictures']:5} pictures  peak RSS {r['peak_rss_mb']:6} MB  ({r['seconds']} s)")
    for mode in args.modes.split(","):
        mine = [r for r in results if r["mode"] == mode]
        if len(mine) >= 2:
            a, b = mine[0], mine[-1]
            per = (b["peak_rss_mb"] - a["peak_rss_mb"]) / (b["pictures"] - a["pictures"]) * 1024
            print(f"{mode}: {a['pictures']} -> {b['pictures']} pictures: x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f} peak RSS, "
                  f"{per:.0f} KB per extra picture")


if __name__ == "__main__":
    main()
