"""train.report_to: checked when the config is read; the before/after metrics and the per-picture
table reach each tracker's API (fakes of tensorboard, wandb and mlflow here; real trackio in
tests/integration/test_trackers_trackio.py)."""

from __future__ import annotations

import importlib.util
import sys
import types
from types import SimpleNamespace

import pytest

from vlmtune.config import load_config
from vlmtune.errors import VlmtuneError
from vlmtune.run_dir import inference_config
from vlmtune.training import trackers

METRICS = {"before": {"exact": 0.25, "token_f1": 0.5}, "after": {"exact": 0.75, "token_f1": 0.625}, "test_rows": 2}
BASE = [{"index": 0, "prompt": "q", "reference": "a white rook", "prediction": "a circle",
         "scores": {"exact": 0.0, "token_f1": 0.4}},
        {"index": 1, "prompt": "q", "reference": "a black king", "prediction": "a black king",
         "scores": {"exact": 1.0, "token_f1": 1.0}}]
TUNED = [{**BASE[0], "prediction": "a white rook", "scores": {"exact": 1.0, "token_f1": 1.0}},
         {**BASE[1], "prediction": "a black | queen", "scores": {"exact": 0.0, "token_f1": 0.66667}}]


def missing(monkeypatch, *names):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in names else real(name, *a))


@pytest.mark.parametrize("name", ["tensorboard", "wandb", "mlflow", "trackio"])
def test_a_missing_tracker_stops_at_config_time_naming_its_extra(monkeypatch, name):
    missing(monkeypatch, name)
    with pytest.raises(VlmtuneError) as err:
        load_config(overrides=[f"train.report_to={name}"])
    assert str(err.value) == (f"config: train.report_to={name} needs the {name} package, which is not installed: "
                              f"pip install 'vlmtune[{name}]'")


def test_an_unknown_tracker_and_the_installed_ones():
    with pytest.raises(VlmtuneError, match="train.report_to='tensorbord' is invalid: use none, trackio, tensorboard"):
        load_config(overrides=["train.report_to=tensorbord"])
    assert load_config(overrides=["train.report_to=trackio"]).train.report_to == "trackio"  # in the dev extra
    assert load_config().train.report_to == "none"


def test_inference_on_a_run_needs_no_tracker(tmp_path, monkeypatch):
    from vlmtune.run_dir import RunDir

    cfg = load_config(overrides=[f"output_dir={tmp_path}", "train.report_to=trackio"])
    RunDir(tmp_path).prepare(cfg)  # config.yaml says trackio
    missing(monkeypatch, "trackio")
    assert inference_config(tmp_path, []).train.report_to == "none"  # predict, chat, serve still work


def test_scalars_and_table_by_hand():
    assert trackers.scalars(METRICS) == {"after/exact": 0.75, "after/token_f1": 0.625, "before/exact": 0.25,
                                         "before/token_f1": 0.5, "change/exact": 0.5, "change/token_f1": 0.125}
    columns, rows = trackers.prediction_table(BASE, TUNED)
    assert columns == ["index", "prompt", "reference", "before", "after", "before_exact", "before_token_f1",
                       "after_exact", "after_token_f1"]
    assert rows[1] == [1, "q", "a black king", "a black king", "a black | queen", 1.0, 1.0, 0.0, 0.6667]
    assert trackers.prediction_table(None, TUNED)[0] == ["index", "prompt", "reference", "after", "after_exact",
                                                         "after_token_f1"]  # eval.before=false: no before columns
    assert trackers.scalars({"before": None, "after": {"exact": 1.0}}) == {"after/exact": 1.0}
    assert "a black \\| queen" in trackers.markdown_table(columns, rows)


def test_run_name_is_the_run_folder_and_the_time():
    assert trackers.run_name("runs/mine/checkpoints").startswith("mine-20")


def trainer(report_to, callbacks=()):
    return SimpleNamespace(args=SimpleNamespace(report_to=report_to, project="vlmtune", run_name="mine-1"),
                           state=SimpleNamespace(global_step=12), callback_handler=SimpleNamespace(callbacks=callbacks))


def fake_module(monkeypatch, name: str, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def test_tensorboard_gets_scalars_and_the_table_in_the_callbacks_folder(monkeypatch, capsys):
    from transformers.integrations import TensorBoardCallback

    written = []

    class Writer:
        def __init__(self, log_dir=None):
            written.append(("dir", log_dir))

        def add_scalar(self, key, value, step):
            written.append((key, value, step))

        def add_text(self, key, text, step):
            written.append((key, text.splitlines()[0], step))

        def close(self):
            written.append("closed")

    fake_module(monkeypatch, "torch.utils.tensorboard", SummaryWriter=Writer)
    callback = TensorBoardCallback.__new__(TensorBoardCallback)
    callback.logging_dir = "runs/mine/checkpoints/runs/x"
    trackers.log_results(trainer(["tensorboard"], [callback]), METRICS, BASE, TUNED)
    assert written[0] == ("dir", "runs/mine/checkpoints/runs/x") and written[-1] == "closed"
    assert ("change/exact", 0.5, 12) in written and ("after/token_f1", 0.625, 12) in written
    assert ("test_predictions", "| index | prompt | reference | before | after | before_exact | before_token_f1 | "
                                "after_exact | after_token_f1 |", 12) in written
    assert "tensorboard: before/after metrics and 2 per-picture answers logged" in capsys.readouterr().out


def test_wandb_logs_into_the_open_run(monkeypatch):
    logged = {}

    class Table:
        def __init__(self, columns, data):
            self.columns, self.data = columns, data

    run = SimpleNamespace(log=lambda values: logged.update(values), summary={})
    fake_module(monkeypatch, "wandb", run=run, Table=Table)
    trackers.log_results(trainer(["wandb"]), METRICS, BASE, TUNED)
    assert logged["before/exact"] == 0.25 and logged["test_predictions"].data[0][4] == "a white rook"
    assert run.summary["change/token_f1"] == 0.125


def test_mlflow_reopens_the_run_the_callback_ended(monkeypatch):
    calls = []

    class Started:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            calls.append("ended")

    fake_module(monkeypatch, "mlflow", active_run=lambda: None,
                last_active_run=lambda: SimpleNamespace(info=SimpleNamespace(run_id="r42")),
                start_run=lambda run_id: calls.append(("start", run_id)) or Started(),
                log_metrics=lambda values, step: calls.append(("metrics", values["after/exact"], step)),
                log_table=lambda data, artifact_file: calls.append(("table", data["reference"], artifact_file)))
    trackers.log_results(trainer(["mlflow"]), METRICS, BASE, TUNED)
    assert calls == [("start", "r42"), ("metrics", 0.75, 12),
                     ("table", ["a white rook", "a black king"], "test_predictions.json"), "ended"]


def test_a_tracker_failure_is_a_note_not_a_failed_run(monkeypatch, capsys):
    fake_module(monkeypatch, "wandb", run=None, Table=None)
    trackers.log_results(trainer(["wandb"]), METRICS, BASE, TUNED)
    assert "note: could not log the results to wandb (RuntimeError: no open wandb run)" in capsys.readouterr().out
