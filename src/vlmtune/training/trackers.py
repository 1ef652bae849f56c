"""After the report: the before/after metrics and the per-picture answers, into the run's tracker.

The Trainer's callback (``train.report_to``) logs the loss and closes its run when training ends.
``log_results`` then reopens that same run through the tracker's own public API and adds
``before/<metric>``, ``after/<metric>``, ``change/<metric>`` and a ``test_predictions`` table
(one row per test picture: reference, before, after and their scores), so the result sits where
people already look, not only in report.html. Each tracker package is an optional extra, imported
only inside its own function.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

PROJECT = "vlmtune"  # trackio project (the Trainer's default would be 'huggingface')
TABLE = "test_predictions"


def run_name(output_dir: str | Path) -> str:
    """Tracker run name: the run folder and the start time (``output_dir`` is RUN/checkpoints)."""
    folder = Path(output_dir)
    folder = folder.parent if folder.name == "checkpoints" else folder
    return f"{folder.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def scalars(metrics: dict) -> dict[str, float]:
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    out = {f"after/{k}": float(v) for k, v in after.items()}
    out.update({f"before/{k}": float(v) for k, v in before.items()})
    out.update({f"change/{k}": float(after[k]) - float(before[k]) for k in after if k in before})
    return out


def prediction_table(base: list[dict] | None, tuned: list[dict]) -> tuple[list[str], list[list]]:
    """(columns, rows): one row per test picture, the before columns only when the base was evaluated."""
    keys = sorted(tuned[0]["scores"]) if tuned else []
    columns = ["index", "prompt", "reference", *(["before"] if base else []), "after",
               *([f"before_{k}" for k in keys] if base else []), *(f"after_{k}" for k in keys)]
    rows = []
    for i, t in enumerate(tuned):
        b = base[i] if base else None
        rows.append([t["index"], t["prompt"], t["reference"], *([b["prediction"]] if b else []), t["prediction"],
                     *([round(b["scores"][k], 4) for k in keys] if b else []), *(round(t["scores"][k], 4) for k in keys)])
    return columns, rows


def markdown_table(columns: list[str], rows: list[list]) -> str:
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def log_results(trainer, metrics: dict, base: list[dict] | None, tuned: list[dict]) -> None:
    """Log into every tracker the Trainer reported to; a failure is a note (the run itself is done)."""
    names = [n for n in (trainer.args.report_to or []) if n in LOGGERS]
    values, (columns, rows) = scalars(metrics), prediction_table(base, tuned)
    for name in names:
        try:
            LOGGERS[name](trainer, values, columns, rows)
            print(f"{name}: before/after metrics and {len(rows)} per-picture answers logged")
        except Exception as err:  # a tracker's outage must not turn a finished run into a failed one
            print(f"note: could not log the results to {name} ({type(err).__name__}: {str(err).splitlines()[0][:200]})")


def _trackio(trainer, values: dict, columns: list[str], rows: list[list]) -> None:
    import trackio  # optional extra [trackio]

    args = trainer.args
    trackio.init(project=args.project, name=args.run_name, resume="allow")  # the run the callback closed
    try:
        trackio.log({**values, TABLE: trackio.Table(columns=columns, data=rows)}, step=trainer.state.global_step)
    finally:
        trackio.finish()


def _tensorboard(trainer, values: dict, columns: list[str], rows: list[list]) -> None:
    from torch.utils.tensorboard import SummaryWriter  # needs the optional extra [tensorboard]
    from transformers.integrations import TensorBoardCallback

    folder = next((c.logging_dir for c in trainer.callback_handler.callbacks if isinstance(c, TensorBoardCallback)),
                  None)
    writer = SummaryWriter(log_dir=folder)
    try:
        for key, value in values.items():
            writer.add_scalar(key, value, trainer.state.global_step)
        writer.add_text(TABLE, markdown_table(columns, rows), trainer.state.global_step)
    finally:
        writer.close()


def _wandb(trainer, values: dict, columns: list[str], rows: list[list]) -> None:
    import wandb  # optional extra [wandb]

    run = wandb.run  # the Trainer's callback leaves its run open after training
    if run is None:
        raise RuntimeError("no open wandb run")
    run.log({**values, TABLE: wandb.Table(columns=columns, data=rows)})
    run.summary.update(values)


def _mlflow(trainer, values: dict, columns: list[str], rows: list[list]) -> None:
    import mlflow  # optional extra [mlflow]

    reopen = None
    if mlflow.active_run() is None:  # the callback ends the run it started: reopen that one
        last = mlflow.last_active_run()
        if last is None:
            raise RuntimeError("no mlflow run to add to")
        reopen = last.info.run_id
    with mlflow.start_run(run_id=reopen) if reopen else nullcontext():
        mlflow.log_metrics(values, step=trainer.state.global_step)
        mlflow.log_table({c: [r[i] for r in rows] for i, c in enumerate(columns)}, artifact_file=f"{TABLE}.json")


LOGGERS = {"trackio": _trackio, "tensorboard": _tensorboard, "wandb": _wandb, "mlflow": _mlflow}
