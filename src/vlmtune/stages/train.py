"""``vlmtune train``: evaluate the base, fine-tune, evaluate again, report — all into one run dir."""

from __future__ import annotations

from pathlib import Path

from vlmtune.config import RunConfig, load_config
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.data.schema import TEST, TRAIN
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation.predictions import predict_split, read_predictions, summarize, write_predictions
from vlmtune.evaluation.report import print_summary, summary_rows, write_report
from vlmtune.models.loading import ADAPTER_DIR, FULL_MODEL_DIR, load_model
from vlmtune.models.lora import check_plan, plan_for
from vlmtune.run_dir import RunDir, read_json, write_json
from vlmtune.training.fit import encode_split, fit


def open_dataset(cfg: RunConfig):
    """The configured data as a canonical DatasetDict with non-empty train and test splits."""
    from vlmtune.data.build import load_source
    from vlmtune.data.captions import Columns
    from vlmtune.data.check import CheckOptions

    if not cfg.data.path:
        raise VlmtuneError("data.path is not set: point it at a caption folder or a built dataset")
    d = cfg.data
    columns = Columns(image=d.image_column, caption=d.caption_column, prompt=d.prompt_column)
    data, _ = load_source(d.path, CheckOptions(columns=columns, prompt=d.prompt, test_ratio=d.test_ratio))
    if TRAIN not in data or len(data[TRAIN]) == 0:
        raise VlmtuneError(f"data.path={d.path}: the train split is empty")
    if TEST not in data or len(data[TEST]) == 0:
        raise VlmtuneError(f"data.path={d.path}: no test split; add split=test rows or raise data.test_ratio")
    return data


def fingerprint(data) -> dict:
    return {split: {"rows": len(ds), "fingerprint": getattr(ds, "_fingerprint", None)} for split, ds in data.items()}


def evaluate_into(run: RunDir, name: str, model, processor, spec, data, cfg: RunConfig) -> list[dict]:
    preds = predict_split(model, processor, spec, data[TEST], cfg.eval, cfg.data, desc=f"evaluating {name}")
    write_predictions(run / f"predictions/{name}.jsonl", preds)
    return preds


def write_run_report(run: RunDir, data, cfg: RunConfig, base: list[dict] | None, tuned: list[dict], facts: dict) -> dict:
    before, after = (summarize(base) if base else None), summarize(tuned)
    test = data[TEST]
    samples = [
        {"image": test[p["index"]]["image"], "reference": p["reference"], "tuned": p["prediction"],
         "tuned_scores": p["scores"], **({"base": base[i]["prediction"], "base_scores": base[i]["scores"]} if base else {})}
        for i, p in enumerate(tuned)
    ]
    history = read_json(run / "log_history.json", [])
    write_report(run.path, f"vlmtune: {Path(cfg.output_dir).name}", f"base model: {cfg.model.name} · data: {cfg.data.path}",
                 samples, before, after, history, list(facts.items()))
    metrics = {"before": before, "after": after, **facts}
    write_json(run / "metrics.json", metrics)
    print_summary(summary_rows(before, after), f"{len(tuned)} test pictures: before vs after fine-tuning")
    print(f"report: {run / 'report.html'}")
    return metrics


def train_run(cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> dict:
    run = RunDir(Path(cfg.output_dir)).prepare(cfg, overwrite=overwrite, resume=resume)
    data = open_dataset(cfg)
    write_json(run / "data.json", fingerprint(data))
    model, processor, spec, dtype = load_model(cfg.model, training=True)
    check_plan(model, spec, cfg.train.lora)  # a wrong target or max_length stops before any work
    encoder = PromptAnswerTokenizer(processor, spec, cfg.data.max_length)
    train_ex, test_ex = encode_split(encoder, data[TRAIN], TRAIN), encode_split(encoder, data[TEST], TEST)
    base = None
    if cfg.eval.before:
        cached = run / "predictions/base.jsonl"
        base = read_predictions(cached) if resume and cached.is_file() else evaluate_into(run, "base", model, processor, spec, data, cfg)
    run.mark(cfg, status="training", family=spec.name)
    needs_eval = cfg.train.eval_each_epoch or cfg.train.early_stopping_patience > 0
    result = fit(model, spec, dtype, train_ex, test_ex if needs_eval else None, cfg,
                 str(run / "checkpoints"), processor.tokenizer.pad_token_id, resume=resume)
    weights = FULL_MODEL_DIR if plan_for(spec, cfg.train.lora).full or cfg.train.lora.targets == "projector" else ADAPTER_DIR
    result.model.save_pretrained(run / weights)
    processor.save_pretrained(run / weights)
    write_json(run / "log_history.json", result.log_history)
    run.mark(cfg, status="trained", weights=weights, family=spec.name)
    tuned = evaluate_into(run, "tuned", result.model, processor, spec, data, cfg)
    facts = {"train_seconds": round(result.seconds, 1), "trainable_parameters": result.trainable,
             "trainable_share": round(result.trainable / result.total, 4), "train_rows": len(data[TRAIN]),
             "test_rows": len(data[TEST]), "family": spec.name}
    metrics = write_run_report(run, data, cfg, base, tuned, facts)
    run.mark(cfg, status="done", weights=weights, family=spec.name)
    return metrics


def run_train(config_file: Path | None, overrides: list[str], resume: bool, overwrite: bool) -> dict:
    return train_run(load_config(config_file, overrides), resume=resume, overwrite=overwrite)
