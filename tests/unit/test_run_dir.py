import json

import pytest

from vlmtune.config import load_config
from vlmtune.errors import VlmtuneError
from vlmtune.models.loading import load_for_inference
from vlmtune.run_dir import RunDir


def test_a_run_dir_describes_itself(tmp_path):
    cfg = load_config(overrides=[f"output_dir={tmp_path / 'r'}", "train.lr=1e-4"])
    run = RunDir(tmp_path / "r").prepare(cfg)
    assert "lr: 0.0001" in (run / "config.yaml").read_text()
    versions = json.loads((run / "versions.json").read_text())
    assert versions["torch"] and versions["transformers"] and versions["python"]
    assert run.info["status"] == "prepared" and run.info["model"]["name"] == "default"


def test_another_run_is_never_mixed_in_or_silently_replaced(tmp_path):
    cfg = load_config(overrides=[f"output_dir={tmp_path / 'r'}"])
    run = RunDir(tmp_path / "r").prepare(cfg)
    run.mark(cfg, status="training")
    (run / "checkpoints").mkdir()
    with pytest.raises(VlmtuneError, match="holds another run; pass --overwrite"):
        RunDir(tmp_path / "r").prepare(cfg)
    RunDir(tmp_path / "r").prepare(cfg, resume=True)
    assert (run / "checkpoints").is_dir()  # resume keeps the work
    RunDir(tmp_path / "r").prepare(cfg, overwrite=True)
    assert not (run / "checkpoints").exists()


def test_an_attempt_that_stopped_before_training_is_reused(tmp_path):
    cfg = load_config(overrides=[f"output_dir={tmp_path / 'r'}"])
    RunDir(tmp_path / "r").prepare(cfg)  # e.g. then a bad max_length stopped it
    RunDir(tmp_path / "r").prepare(cfg)  # no --overwrite needed


def test_user_folders_are_never_deleted(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"precious")
    cfg = load_config(overrides=[f"output_dir={folder}"])
    for kwargs in ({}, {"overwrite": True}):
        with pytest.raises(VlmtuneError):
            RunDir(folder).prepare(cfg, **kwargs)
    assert (folder / "holiday.jpg").read_bytes() == b"precious"
    with pytest.raises(VlmtuneError, match="nothing to resume"):
        RunDir(folder).prepare(cfg, resume=True)


def test_unfinished_run_cannot_be_loaded_for_inference(tmp_path):
    cfg = load_config(overrides=[f"output_dir={tmp_path / 'r'}"])
    RunDir(tmp_path / "r").prepare(cfg).mark(cfg, status="training")
    with pytest.raises(VlmtuneError, match="has no trained weights yet"):
        load_for_inference(tmp_path / "r")


def test_the_training_plan_is_made_once_and_recorded(tmp_path, tiny_model_dir, monkeypatch):
    import tiny
    import vlmtune.models.lora as lora

    calls = []
    real = lora.plan_for
    monkeypatch.setattr(lora, "plan_for", lambda *a: calls.append(a) or real(*a))
    run = tiny.trained_run(tmp_path / "run", tiny_model_dir, "train.lora.targets=lm+projector", steps=2)
    assert len(calls) == 1
    plan = RunDir(run).info["plan"]
    assert plan["targets"] == "lm+projector" and plan["whole"] == ["model.multi_modal_projector"]
    assert plan["lora_pattern"] == (r"(?!(?:model\.multi_modal_projector)\.)(?:(?:model\.language_model\.(.*\.)?"
                                    r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)))")
    assert (plan["r"], plan["alpha"], plan["full"]) == (16, 32, False)
