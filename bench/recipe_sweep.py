"""The small-data recipe, fitted on several tasks and sizes, not on one: today's defaults vs the new ones.

    python bench/recipe_sweep.py [--sizes 30,60,120] [--tasks chess,shapes,counting] [--recipes old,new]
    # writes bench/results/recipe_sweep.json and .md; CPU, about half an hour on 2 cores

Tasks (synthetic, exact captions): chess renders (the demo's set), shape scenes (the alignment
set's kind), counting scenes (data/synth/counting.py). Each size takes the first N train pictures
of the task and the same 30 test pictures. One ``vlmtune train`` per cell on the embedded default
model, eval.before off (the base scores ~0 on every task) and the held-out prompt off, so each
cell's minutes are training + one evaluation.

Recipes: ``old`` = the defaults before the small-data issue (3 epochs, projector at the LoRA
learning rate, LoRA dropout 0.05, one prompt); ``new`` = epochs by train.step_budget (150 steps,
3 to 30 epochs), LoRA dropout 0, the default prompt paraphrases (data.prompts).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

from vlmtune.config import load_config
from vlmtune.data.synth import cached_set
from vlmtune.data.synth.counting import synth_counting
from vlmtune.data.synth.shapes import synth_shapes
from vlmtune.stages.demo import chess_data
from vlmtune.stages.train import train_run

HERE = Path(__file__).resolve().parent
N_TEST = 30
OLD = ["train.epochs=3", "train.projector_lr=null", "train.lora.dropout=0.05", "data.prompts=[]"]
RECIPES = {"old": OLD, "new": ["train.epochs=null", "train.lora.dropout=0"]}
COMMON = ["eval.before=false", "data.heldout_prompt=null", "train.save_steps=-1", "train.eval_each_epoch=false",
          "eval.max_new_tokens=24", "eval.batch_size=16", "data.validation_ratio=0"]


def source(task: str) -> tuple[Path, list[str]]:
    """The task's full caption folder and the overrides it needs (labels for chess)."""
    if task == "chess":
        return chess_data(400, 224, 0, 48 / 400), ["data.label_column=pieces", "data.label_parser=chess"]
    make = {"shapes": synth_shapes, "counting": synth_counting}[task]
    recipe = {"n": 200, "size": 224, "seed": 7, "test_ratio": N_TEST / 200, "task": task}
    folder = cached_set(f"sweep-{task}", recipe, lambda out: make(out, n=200, seed=7, size=224, test_ratio=N_TEST / 200))
    return folder, []


def subset(folder: Path, n_train: int, out: Path) -> Path:
    """A caption folder of the first ``n_train`` train rows and the first N_TEST test rows (copied: the
    data layer refuses links that point out of the folder)."""
    with open(folder / "captions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    shutil.rmtree(out, ignore_errors=True)
    keep = [r for r in rows if r["split"] == "train"][:n_train] + [r for r in rows if r["split"] == "test"][:N_TEST]
    (out / "images").mkdir(parents=True, exist_ok=True)
    for r in keep:
        shutil.copyfile(folder / r["file_name"], out / r["file_name"])
    with open(out / "captions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(keep)
    return out


def cell(task: str, n: int, recipe: str, root: Path) -> dict:
    folder, extra = source(task)
    data = subset(folder, n, root / f"{task}-{n}")
    out = root / f"run-{task}-{n}-{recipe}"
    start = time.perf_counter()
    metrics = train_run(load_config(overrides=[f"data.path={data}", f"output_dir={out}", *COMMON, *extra,
                                               *RECIPES[recipe]]), overwrite=True)
    after = metrics["after"]
    return {"task": task, "pictures": n, "recipe": recipe, "minutes": (time.perf_counter() - start) / 60,
            "epochs": metrics.get("epochs"), "score": after.get("label_f1", after["token_f1"]),
            "score_name": "label_f1" if "label_f1" in after else "token_f1", "exact": after["exact"],
            "token_f1": after["token_f1"]}


def markdown(cells: list[dict]) -> str:
    lines = ["| task (score) | pictures | old: score / exact / min | new: score / exact / min | new - old |",
             "|---|---:|---|---|---:|"]
    by = {(c["task"], c["pictures"], c["recipe"]): c for c in cells}
    for task, n in dict.fromkeys((c["task"], c["pictures"]) for c in cells):
        old, new = by.get((task, n, "old")), by.get((task, n, "new"))
        fmt = (lambda c: f"{c['score']:.3f} / {c['exact']:.3f} / {c['minutes']:.1f} ({c['epochs']:g} ep)" if c else "—")
        name = (old or new)["score_name"].replace("label_f1", "piece-set F1").replace("token_f1", "token F1")
        delta = f"{new['score'] - old['score']:+.3f}" if old and new else "—"
        lines.append(f"| {task} ({name}) | {n} | {fmt(old)} | {fmt(new)} | {delta} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="30,60,120")
    ap.add_argument("--tasks", default="chess,shapes,counting")
    ap.add_argument("--recipes", default="old,new")
    ap.add_argument("--root", type=Path, default=Path("runs/sweep"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "recipe_sweep")
    args = ap.parse_args()
    cells = []
    for task in args.tasks.split(","):
        for n in map(int, args.sizes.split(",")):
            for recipe in args.recipes.split(","):
                cells.append(cell(task, n, recipe, args.root))
                print(json.dumps(cells[-1]), flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.with_suffix(".json").write_text(json.dumps(cells, indent=1))
    table = markdown(cells)
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
