"""``vlmtune evaluate RUN_OR_MODEL``: generate on a split and score it.

A run directory brings its own data and eval settings (config.yaml); a bare model directory needs
``data.path=...``. Results go to ``<run>/eval/<split>.jsonl`` + ``.json`` (or next to the model
under ``--out``).
"""

from __future__ import annotations

from pathlib import Path

from vlmtune.config import load_config
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation.predictions import predict_split, summarize, write_predictions
from vlmtune.models.loading import load_for_inference, read_run_info
from vlmtune.run_dir import write_json
from vlmtune.data.run_data import open_dataset


def run_evaluate(path: Path, split: str, overrides: list[str], out: Path | None = None) -> dict:
    path = Path(path)
    if not path.exists():
        raise VlmtuneError(f"{path}: not found; pass a run directory or a model directory")
    is_run = bool(read_run_info(path))
    # Evaluation trains nothing: a tracker the run logged to need not be installed here.
    cfg = load_config(path / "config.yaml" if is_run else None, ["train.report_to=none", *overrides])
    if not is_run and not cfg.data.path:
        raise VlmtuneError(f"{path} is not a vlmtune run: add data.path=DATA to say what to evaluate it on")
    data = open_dataset(cfg)
    if split not in data:
        raise VlmtuneError(f"split '{split}' not in {cfg.data.path}; available: {', '.join(data)}")
    model, processor, spec = load_for_inference(path, dtype=cfg.model.dtype)
    preds = predict_split(model, processor, spec, data[split], cfg.eval, cfg.data, desc=f"evaluating {path.name}")
    scores = summarize(preds)
    target = Path(out) if out else (path / "eval" if is_run else Path("eval") / path.name)
    target.mkdir(parents=True, exist_ok=True)
    write_predictions(target / f"{split}.jsonl", preds)
    write_json(target / f"{split}.json", {"model": str(path), "split": split, "rows": len(preds), "scores": scores})
    print(", ".join(f"{k} {v:.3f}" for k, v in scores.items()) + f"  ({len(preds)} rows, written to {target})")
    return scores
