"""data.heldout_domain: a second test set from a domain not trained on, scored before and after beside the test split."""

import json

import pytest

import tiny
from vlmtune.config import load_config
from vlmtune.data.build import load_eval_set
from vlmtune.data.check import CheckOptions
from vlmtune.errors import VlmtuneError
from vlmtune.stages.train import train_run


def test_every_row_counts_whatever_its_split(tmp_path):
    folder = tiny.caption_folder(tmp_path / "other", n=8)  # 2 test rows, 6 train rows
    rows = load_eval_set(str(folder), CheckOptions(prompt="q?"))
    assert len(rows) == 8 and set(rows["prompt"]) == {"q?"}
    assert sorted(rows["answer"]) == sorted(tiny.CAPTIONS[i % len(tiny.CAPTIONS)] for i in range(8))


def test_train_scores_the_heldout_domain_before_and_after(tmp_path, tiny_model_dir):
    other = tiny.caption_folder(tmp_path / "other", n=5)
    run = tiny.trained_run(tmp_path / "run", tiny_model_dir, f"data.heldout_domain={other}", "data.heldout_prompt=null",
                           steps=2)
    for name in ("base", "tuned"):
        rows = (run / f"predictions/{name}_heldout_domain.jsonl").read_text().splitlines()
        assert len(rows) == 5 and all(json.loads(r)["prompt"] == "describe this picture" for r in rows)
    metrics = json.loads((run / "metrics.json").read_text())
    domain = metrics["heldout_domain"]
    assert domain["path"] == str(other) and domain["rows"] == 5
    assert domain["before"].keys() == domain["after"].keys() == metrics["after"].keys()
    assert "heldout_prompt" not in metrics
    md = (run / "report.md").read_text()
    assert "## Held-out domain" in md and "## Prompt robustness" not in md
    assert f"5 pictures from {other}" in md and "| test split, before | test split, after | held-out domain, before" in md


def test_a_missing_heldout_domain_stops_before_the_model_loads(tmp_path, monkeypatch):
    import vlmtune.stages.train as train

    monkeypatch.setattr(train, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    data = tiny.caption_folder(tmp_path / "data")
    cfg = load_config(overrides=[f"data.path={data}", f"output_dir={tmp_path / 'run'}",
                                 f"data.heldout_domain={tmp_path / 'nope'}"])
    with pytest.raises(VlmtuneError, match=rf"^data.heldout_domain: {tmp_path / 'nope'}: no such file or folder$"):
        train_run(cfg)
