"""Generate on a dataset split and score every sample."""

from __future__ import annotations

import json
from pathlib import Path

from vlmtune.config import DataConfig, EvalConfig
from vlmtune.data.images import model_rgb
from vlmtune.data.schema import ANSWER, IMAGE, PROMPT
from vlmtune.evaluation.generate import generate_answers
from vlmtune.evaluation.metrics import label_parser, mean_scores, score_sample


def predict_split(model, processor, spec, dataset, ecfg: EvalConfig, dcfg: DataConfig, desc: str) -> list[dict]:
    if ecfg.max_samples is not None:
        dataset = dataset.select(range(min(ecfg.max_samples, len(dataset))))
    images = [model_rgb(row[IMAGE]) for row in dataset]
    prompts, refs = dataset[PROMPT], dataset[ANSWER]
    labels = dataset[dcfg.label_column] if dcfg.label_column in dataset.column_names else [None] * len(refs)
    parser = label_parser(dcfg.label_parser) if dcfg.label_column else None
    preds = generate_answers(model, processor, spec, images, prompts, ecfg, desc=desc)
    return [
        {"index": i, "prompt": prompts[i], "reference": refs[i], "label": labels[i], "prediction": preds[i],
         "scores": score_sample(preds[i], refs[i], labels[i], parser)}
        for i in range(len(preds))
    ]


def summarize(predictions: list[dict]) -> dict[str, float]:
    return mean_scores([p["scores"] for p in predictions])


def write_predictions(path: Path, predictions: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for p in predictions:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")


def read_predictions(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
