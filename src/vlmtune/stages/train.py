"""``vlmtune train``: evaluate the base, fine-tune, evaluate again, report — all into one run dir."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vlmtune.config import RunConfig, load_config, training_prompts
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.data.check import lookalike_caveats
from vlmtune.data.prompts import with_prompt
from vlmtune.data.run_data import open_data, open_heldout_domain, validation_for
from vlmtune.data.schema import TEST, TRAIN, VALIDATION
from vlmtune.evaluation.predictions import predict_split, read_predictions, summarize, write_predictions
from vlmtune.evaluation.metrics import label_parser
from vlmtune.evaluation.report import print_summary, summary_rows, write_report
from vlmtune.models.loading import load_for_inference, load_model
from vlmtune.paths import ADAPTER_DIR, FULL_MODEL_DIR
from vlmtune.models.lora import TrainPlan, check_plan
from vlmtune.models.resolution import print_sequence_stats
from vlmtune.run_dir import RunDir, read_json, write_json
from vlmtune.training.distributed import check_launch, is_main_process, save_trained, sharded, wait_for_everyone
from vlmtune.training.fit import encode_split, fit, ready, resume_checkpoint
from vlmtune.training.schedule import augment_views
from vlmtune.training.trackers import log_results


# Probes: extra tests scored before and after beside the test split; each key names the
# predictions/{base,tuned}_<key>.jsonl files and the metrics.json entry.
HELDOUT = "heldout_prompt"  # the test split asked a wording no train row was asked
DOMAIN = "heldout_domain"  # data.heldout_domain: pictures of a domain not trained on


@dataclass
class Probe:
    key: str
    data: dict  # {TEST: rows}
    info: dict  # what the report says of it besides the scores (the prompt, the set's path)


def evaluate_into(run: RunDir, name: str, model, processor, spec, data, cfg: RunConfig) -> list[dict]:
    preds = predict_split(model, processor, spec, data[TEST], cfg.eval, cfg.data, desc=f"evaluating {name}")
    write_predictions(run / f"predictions/{name}.jsonl", preds)
    return preds


def label_sets(cfg: RunConfig, base: list[dict] | None, tuned: list[dict]) -> list[dict]:
    """Per picture, the parsed label multisets the report's per-class table counts (empty dicts
    without a label column and parser, or when a test row has no label)."""
    parser = label_parser(cfg.data.label_parser) if cfg.data.label_column else None
    if parser is None or any(p.get("label") is None for p in tuned):
        return [{} for _ in tuned]
    parse_text, parse_label = parser
    return [{"reference_labels": parse_label(p["label"]), "tuned_labels": parse_text(p["prediction"]),
             **({"base_labels": parse_text(base[i]["prediction"])} if base else {})} for i, p in enumerate(tuned)]


def write_run_report(run: RunDir, data, cfg: RunConfig, base: list[dict] | None, tuned: list[dict], facts: dict,
                     probes: dict | None = None) -> dict:
    """``probes``: ``probe_summaries``' before/after scores by probe key (HELDOUT, DOMAIN)."""
    probes = probes or {}
    heldout, domain = probes.get(HELDOUT), probes.get(DOMAIN)
    before, after = (summarize(base) if base else None), summarize(tuned)
    test = data[TEST]
    samples = [
        {"image": test[p["index"]]["image"], "reference": p["reference"], "tuned": p["prediction"],
         "tuned_scores": p["scores"], **({"base": base[i]["prediction"], "base_scores": base[i]["scores"]} if base else {}),
         **labels}
        for i, (p, labels) in enumerate(zip(tuned, label_sets(cfg, base, tuned)))
    ]
    history = read_json(run / "log_history.json", [])
    write_report(run.path, f"vlmtune: {Path(cfg.output_dir).name}", f"base model: {cfg.model.name} · data: {cfg.data.path}",
                 samples, before, after, history, list(facts.items()),
                 caveats=lookalike_caveats(data[TRAIN], test, len(tuned)), heldout=heldout, domain=domain)
    metrics = {"before": before, "after": after, **facts, **probes}
    write_json(run / "metrics.json", metrics)
    print_summary(summary_rows(before, after), f"{len(tuned)} test pictures: before vs after fine-tuning")
    if heldout:
        print_summary(summary_rows(heldout["before"], heldout["after"]),
                      f"the same pictures asked the held-out prompt {heldout['prompt']!r}")
    if domain:
        print_summary(summary_rows(domain["before"], domain["after"]),
                      f"{domain['rows']} pictures of the held-out domain {domain['path']}")
    print(f"report: {run / 'report.html'}")
    return metrics


@dataclass
class Session:
    """What one ``train`` run holds between its phases."""

    cfg: RunConfig
    run: RunDir
    main: bool  # the main process writes the run dir, evaluates and reports (others only train)
    data: object  # DatasetDict: train, test and maybe validation
    validation: object | None
    probes: list[Probe] = field(default_factory=list)
    model: object = None
    processor: object = None
    spec: object = None
    dtype: object = None
    plan: TrainPlan | None = None


def start(cfg: RunConfig, resume: bool, overwrite: bool) -> tuple[Session, Path | bool]:
    """Refusals first, then the run dir and the data; (session, checkpoint to resume or False)."""
    label_parser(cfg.data.label_parser)  # an unknown parser stops before any work, not after training
    check_launch(cfg.model.quantization, cfg.model.device_map)
    # Several processes (accelerate launch / torchrun): all train; the run dir, the before/after
    # evaluation and the report are the main process's (a failure there stops the launcher's group).
    main = is_main_process()
    run = RunDir(Path(cfg.output_dir))
    if main:
        run.prepare(cfg, overwrite=overwrite, resume=resume)
    wait_for_everyone()
    checkpoint = resume_checkpoint(run / "checkpoints") if resume else False
    data, record = open_data(cfg)
    if resume:
        run.check_resume_data(record)
    if main:
        write_json(run / "data.json", record)
    # Opened now: a wrong data.heldout_domain stops the run before the model loads.
    return Session(cfg, run, main, data, validation_for(cfg, data), probes_of(cfg, data)), checkpoint


def probes_of(cfg: RunConfig, data) -> list[Probe]:
    probes, prompt = [], cfg.data.heldout_prompt
    if prompt:
        probes.append(Probe(HELDOUT, {TEST: with_prompt(data[TEST], prompt)},
                            {"prompt": prompt, "training_prompts": training_prompts(cfg.data)}))
    domain = open_heldout_domain(cfg.data)
    if domain is not None:
        probes.append(Probe(DOMAIN, {TEST: domain}, {"path": cfg.data.heldout_domain, "rows": len(domain)}))
    return probes


def load(s: Session) -> None:
    """The base model and the run's training plan, made once (a wrong target stops here)."""
    s.model, s.processor, s.spec, s.dtype = load_model(s.cfg.model, training=True, bf16=s.cfg.train.bf16)
    s.plan = check_plan(s.model, s.spec, s.cfg.train.lora)


def encoded(s: Session):
    """(train, validation) ready for the Trainer. Every row is encoded once now, so a row that
    cannot be trained on stops the run before the base evaluation; nothing is held: the Trainer
    encodes or reads each example when it draws it."""
    encoder = PromptAnswerTokenizer(s.processor, s.spec, s.cfg.data.max_length)
    seen: list[dict] = []  # token ids only, for the statistics line
    cfg, line = augment_views(s.cfg, len(s.data[TRAIN]))
    if line:
        print(line)
    rows = encode_split(encoder, s.data[TRAIN], TRAIN, cfg.data.augment, s.cfg.train.seed)
    train = ready(s.model, s.spec, s.cfg, rows, s.run.path,
                  observe=lambda e: seen.append({"input_ids": e["input_ids"]}), plan=s.plan)
    print_sequence_stats(s.processor, seen, TRAIN, s.cfg.data.max_length)
    if s.validation is None:
        return train, None
    return train, ready(s.model, s.spec, s.cfg, encode_split(encoder, s.validation, VALIDATION), s.run.path, plan=s.plan)


def base_predictions(s: Session, resume: bool) -> tuple[list[dict] | None, dict]:
    """The base model's answers on the test split and on each probe (each kept from before a
    crash when resuming); (None, {}) without eval.before."""
    if not (s.cfg.eval.before and s.main):
        return None, {}
    return (kept_or_evaluated(s, "base", s.data, resume),
            {p.key: kept_or_evaluated(s, f"base_{p.key}", p.data, resume) for p in s.probes})


def kept_or_evaluated(s: Session, name: str, data, resume: bool) -> list[dict]:
    cached = s.run / f"predictions/{name}.jsonl"
    if resume and cached.is_file():
        return read_predictions(cached)
    return evaluate_into(s.run, name, s.model, s.processor, s.spec, data, s.cfg)


def probe_summaries(s: Session, tuned_model, base: dict) -> dict:
    """Each probe answered by the tuned model: {key: its info and the before/after scores}."""
    summaries = {}
    for p in s.probes:
        tuned = evaluate_into(s.run, f"tuned_{p.key}", tuned_model, s.processor, s.spec, p.data, s.cfg)
        summaries[p.key] = {**p.info, "before": summarize(base[p.key]) if p.key in base else None,
                            "after": summarize(tuned)}
    return summaries


def finish(s: Session, result, weights: str, base: list[dict] | None, base_probes: dict) -> dict:
    """Main process: save the processor and history, evaluate the tuned model, report."""
    s.processor.save_pretrained(s.run / weights)
    write_json(s.run / "log_history.json", result.log_history)
    s.run.mark(s.cfg, status="trained", weights=weights, family=s.spec.name)
    # A sharded model holds a slice of each weight per process: evaluate the saved one instead.
    tuned_model = result.model if sharded() is None else load_for_inference(s.run.path, s.cfg.model.dtype)[0]
    tuned = evaluate_into(s.run, "tuned", tuned_model, s.processor, s.spec, s.data, s.cfg)
    facts = {"train_seconds": round(result.seconds, 1), "trainable_parameters": result.trainable,
             "trainable_share": round(result.trainable / result.total, 4), "train_rows": len(s.data[TRAIN]),
             "validation_rows": 0 if s.validation is None else len(s.validation), "test_rows": len(s.data[TEST]),
             "family": s.spec.name, "epochs": result.epochs}
    metrics = write_run_report(s.run, s.data, s.cfg, base, tuned, facts, probe_summaries(s, tuned_model, base_probes))
    log_results(result.trainer, metrics, base, tuned)  # train.report_to: metrics + per-picture answers
    s.run.mark(s.cfg, status="done", weights=weights, family=s.spec.name)
    return metrics


def train_run(cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> dict:
    s, checkpoint = start(cfg, resume, overwrite)
    load(s)
    train, validation = encoded(s)
    base, base_probes = base_predictions(s, resume)
    if s.main:
        s.run.mark(cfg, status="training", family=s.spec.name, plan=s.plan.to_dict())
    wait_for_everyone()
    result = fit(s.model, s.spec, s.dtype, train, validation, cfg, str(s.run / "checkpoints"),
                 s.processor.tokenizer.pad_token_id, resume=checkpoint, plan=s.plan)
    weights = FULL_MODEL_DIR if s.plan.saves_full_model else ADAPTER_DIR
    save_trained(result.model, result.trainer, s.run / weights)  # FSDP / ZeRO-3: gathered from every process
    return finish(s, result, weights, base, base_probes) if s.main else {}


def run_train(config_file: Path | None, overrides: list[str], resume: bool, overwrite: bool) -> dict:
    return train_run(load_config(config_file, overrides), resume=resume, overwrite=overwrite)
