"""The demo pipeline end to end on a tiny random model: synth -> base eval -> LoRA -> eval -> report."""

import json

import pytest

from vlmtune.stages.demo import run_demo


@pytest.mark.slow
def test_demo_pipeline_on_a_tiny_model(tmp_path, cache, tiny_model_dir, monkeypatch, capsys):
    # Glyph pictures keep this hermetic (no .deb download) and fast; the 3D path has its own tests.
    monkeypatch.setattr("vlmtune.data.synth.chess.load_meshes", lambda *a, **k: None)
    out = tmp_path / "run"
    overrides = [f"model.name={tiny_model_dir}", "train.max_steps=4", "train.batch_size=2", "train.bf16=false",
                 "eval.max_new_tokens=4", "eval.batch_size=4"]
    metrics = run_demo(out, None, overrides, pictures=12, test_pictures=4, size=56)
    for name in ("config.yaml", "versions.json", "data.json", "metrics.json", "report.md", "report.html",
                 "predictions/base.jsonl", "predictions/tuned.jsonl", "adapter/adapter_config.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test_rows"] == 4 and saved["train_rows"] == 8
    # Without meshes there is no held-out render domain (glyphs are no proxy for real pieces): a note, no failure.
    assert "heldout_domain" not in saved and "no held-out render domain in this demo" in capsys.readouterr().out
    assert set(saved["after"]) >= {"exact", "token_f1", "rouge_l", "label_f1"}
    assert metrics["before"].keys() == metrics["after"].keys()
    html = (out / "report.html").read_text()
    assert html.count("data:image/jpeg;base64,") == 4  # one thumbnail per test picture
    info = json.loads((out / "vlmtune_run.json").read_text())
    assert info["status"] == "done" and info["weights"] == "adapter"
    # `vlmtune evaluate RUN` re-scores the run from its own config: the tuned predictions again.
    from vlmtune.stages.evaluate import run_evaluate

    scores = run_evaluate(out, "test", [])
    assert scores == pytest.approx(saved["after"])
    assert json.loads((out / "eval/test.json").read_text())["rows"] == 4
    # A repeat demo replaces its own previous run instead of refusing.
    run_demo(out, None, overrides + ["eval.before=false"], pictures=12, test_pictures=4, size=56)
    assert json.loads((out / "metrics.json").read_text())["before"] is None
