"""`vlmtune train train.report_to=trackio` on the tiny LLaVA, offline: the loss, the before/after metrics
and the per-picture table land in trackio's local database (its own reader checks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import tiny

READ = """
import json
from trackio.sqlite_storage import SQLiteStorage
runs = SQLiteStorage.get_runs("vlmtune")
print(json.dumps({"runs": runs, "logs": SQLiteStorage.get_logs("vlmtune", runs[0]) if runs else []}, default=str))
"""


@pytest.mark.slow
def test_metrics_and_per_picture_answers_land_in_trackio(tmp_path, tiny_model_dir):
    pytest.importorskip("trackio", reason="trackio is in the dev extra: pip install -e '.[dev]'")
    data = tiny.caption_folder(tmp_path / "data", n=12)
    run = tmp_path / "run"
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1"}
    train = subprocess.run(
        [sys.executable, "-m", "vlmtune.cli", "train", f"model.name={tiny_model_dir}", f"data.path={data}",
         f"output_dir={run}", "train.max_steps=6", "train.batch_size=4", "train.logging_steps=2", "train.bf16=false",
         "train.eval_each_epoch=false", "train.save_steps=-1", "eval.max_new_tokens=4", "train.report_to=trackio"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    assert "trackio: before/after metrics and 3 per-picture answers logged" in train.stdout
    read = subprocess.run([sys.executable, "-c", READ], env=env, capture_output=True, text=True, timeout=120)
    stored = json.loads(read.stdout.strip().splitlines()[-1])
    assert len(stored["runs"]) == 1 and stored["runs"][0].startswith("run-")  # one run: training + results
    logs = stored["logs"]
    assert [round(e["train/loss"], 4) for e in logs if "train/loss" in e] == [
        round(h["loss"], 4) for h in json.loads((run / "log_history.json").read_text()) if "loss" in h]
    final = next(e for e in logs if "after/token_f1" in e)
    metrics = json.loads((run / "metrics.json").read_text())
    for key, value in metrics["after"].items():
        assert final[f"after/{key}"] == pytest.approx(value)
        assert final[f"before/{key}"] == pytest.approx(metrics["before"][key])
        assert final[f"change/{key}"] == pytest.approx(value - metrics["before"][key])
    table = final["test_predictions"]["_value"]
    tuned = [json.loads(line) for line in (run / "predictions/tuned.jsonl").read_text().splitlines()]
    base = [json.loads(line) for line in (run / "predictions/base.jsonl").read_text().splitlines()]
    assert [(r["reference"], r["before"], r["after"]) for r in table] == [
        (t["reference"], b["prediction"], t["prediction"]) for b, t in zip(base, tuned)]
