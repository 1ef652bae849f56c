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
3 to 30 epochs), LoRA dropout 0, the default prompt paraphrases (data.prompts); ``3ep`` = today's
defaults. A ``+aug`` recipe is the same with data.augment on (its defaults), the others have it off.
Chess cells are also scored on the held-out render domain (data.heldout_domain).
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
OLD = ["train.epochs=3", "train.projector_lr=null", "train.lora.dropout=0.05", "data.prompts=[]", "data.augment.views=1"]
NEW = ["train.epochs=null", "train.lora.dropout=0", "data.augment.views=1"]
THREE = ["train.epochs=3", "train.lora.dropout=0.05", "data.augment.views=1"]  # the defaults before augmentation
# "+aug": the same with 4 augmented views (photometric + zoom-out jitter). "new+aug" is today's default
# for a few dozen pictures (train.epochs=null gives >= 6 epochs, so data.augment.views=null gives 4).
RECIPES = {"old": OLD, "new": NEW, "new+aug": [*NEW[:-1], "data.augment.views=4"], "3ep": THREE,
           "3ep+aug": [*THREE[:-1], "data.augment.views=4"],
           # the same wall time as 3ep, more learning per step: can a hotter rate stand in for more steps?
           "3ep-proj": ["train.epochs=3", "train.lora.dropout=0", "train.projector_lr=1e-3", "data.augment.views=1"],
           "3ep-lr": ["train.epochs=3", "train.lora.dropout=0", "train.lr=1e-3", "train.projector_lr=3e-3",
                      "data.augment.views=1"]}
COMMON = ["eval.before=false", "data.heldout_prompt=null", "train.save_steps=-1", "train.eval_each_epoch=false",
          "eval.max_new_tokens=24", "eval.batch_size=16", "data.validation_ratio=0"]


def source(task: str) -> tuple[Path, list[str]]:
    """The task's full caption folder and the overrides it needs (labels for chess)."""
    if task == "chess":  # scored on the held-out render domain too (other meshes and colours)
        return chess_data(400, 224, 0, 48 / 400), ["data.label_column=pieces", "data.label_parser=chess",
                                                   f"data.heldout_domain={chess_data(48, 224, 1000, 1.0, 'heldout')}"]
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
    after, domain = metrics["after"], (metrics.get("heldout_domain") or {}).get("after")
    return {"task": task, "pictures": n, "recipe": recipe, "minutes": (time.perf_counter() - start) / 60,
            "epochs": metrics.get("epochs"), "score": after.get("label_f1", after["token_f1"]),
            "score_name": "label_f1" if "label_f1" in after else "token_f1", "exact": after["exact"],
            "token_f1": after["token_f1"], **({"heldout_domain_score": domain["label_f1"]} if domain else {})}


def _fmt(c: dict | None) -> str:
    if not c:
        return "—"
    domain = f" (held-out domain {c['heldout_domain_score']:.3f})" if "heldout_domain_score" in c else ""
    return f"{c['score']:.3f}{domain} / {c['exact']:.3f} / {c['minutes']:.1f} ({c['epochs']:g} ep)"


def markdown(cells: list[dict], a: str = "old", b: str = "new") -> str:
    """Recipe ``a`` against ``b``, a row per task and size; the last column is b - a."""
    lines = [f"| task (score) | pictures | {a}: score / exact / min | {b}: score / exact / min | {b} - {a} |",
             "|---|---:|---|---|---:|"]
    by = {(c["task"], c["pictures"], c["recipe"]): c for c in cells}
    for task, n in dict.fromkeys((c["task"], c["pictures"]) for c in cells):
        one, two = by.get((task, n, a)), by.get((task, n, b))
        name = (one or two)["score_name"].replace("label_f1", "piece-set F1").replace("token_f1", "token F1")
        delta = f"{two['score'] - one['score']:+.3f}" if one and two else "—"
        lines.append(f"| {task} ({name}) | {n} | {_fmt(one)} | {_fmt(two)} | {delta} |")
    return "\n".join(lines) + "\n"


def grid(cells: list[dict], recipes: list[str]) -> str:
    """One column per recipe (score, held-out domain score for chess, minutes), a row per task and size."""
    by = {(c["task"], c["pictures"], c["recipe"]): c for c in cells}
    lines = ["| task (score) | pictures | " + " | ".join(recipes) + " |", "|---|---:|" + "---|" * len(recipes)]
    for task, n in dict.fromkeys((c["task"], c["pictures"]) for c in cells):
        row = [by.get((task, n, r)) for r in recipes]
        name = next(c for c in row if c)["score_name"].replace("label_f1", "piece-set F1").replace("token_f1", "token F1")
        lines.append(f"| {task} ({name}) | {n} | " + " | ".join(_fmt(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="30,60,120")
    ap.add_argument("--tasks", default="chess,shapes,counting")
    ap.add_argument("--recipes", default="old,new")
    ap.add_argument("--root", type=Path, default=Path("runs/sweep"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "recipe_sweep")
    ap.add_argument("--grid", default="", help="Only print a table of saved results: comma-separated JSON files "
                                                "(their cells, one column per --recipes entry)")
    args = ap.parse_args()
    if args.grid:
        cells = [c for f in args.grid.split(",") for c in json.loads(Path(f).read_text())]
        print(grid(cells, args.recipes.split(",")))
        return
    cells = []
    for task in args.tasks.split(","):
        for n in map(int, args.sizes.split(",")):
            for recipe in args.recipes.split(","):
                cells.append(cell(task, n, recipe, args.root))
                print(json.dumps(cells[-1]), flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.with_suffix(".json").write_text(json.dumps(cells, indent=1))
    table = markdown(cells, *args.recipes.split(",")[:2])
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
