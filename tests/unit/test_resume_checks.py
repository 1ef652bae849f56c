"""``--resume`` continues the same run or refuses in one line: config, data, and a checkpoint to resume from."""

import json

import pytest
import yaml

import tiny
from vlmtune.config import load_config, save_config
from vlmtune.errors import VlmtuneError
from vlmtune.run_dir import RunDir, data_change, resumable
from vlmtune.data.run_data import open_data
from vlmtune.stages.train import train_run

RECORD = {"train": {"rows": 6, "fingerprint": "f1", "content": "c1"}, "test": {"rows": 2, "fingerprint": "f2", "content": "c2"}}


def started(tmp_path, *overrides):
    """A run dir as ``train`` leaves it once started (config.yaml, marker, data.json)."""
    data = tiny.caption_folder(tmp_path / "data")
    cfg = load_config(overrides=[f"data.path={data}", f"output_dir={tmp_path / 'run'}", *overrides])
    run = RunDir(tmp_path / "run").prepare(cfg)
    (run / "data.json").write_text(json.dumps(open_data(cfg)[1]))
    return run, cfg, data


def cfg_overrides(cfg):
    return [f"data.path={cfg.data.path}", f"output_dir={cfg.output_dir}"]


def test_changing_a_key_that_shapes_the_weights_is_refused_naming_it(tmp_path):
    run, cfg, data = started(tmp_path)
    changed = load_config(run / "config.yaml", ["train.lr=1e-3", "train.lora.r=8"])
    with pytest.raises(VlmtuneError, match=r"--resume with a different config \(train.lora.r: 16 -> 8, train.lr: 0.0003 "
                                           r"-> 0.001\); resume with the run's own \(-c .*config.yaml\)"):
        RunDir(run.path).prepare(changed, resume=True)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == 0.0003  # not overwritten


def test_keys_that_may_change_on_resume_pass_and_are_saved(tmp_path):
    run, _, _ = started(tmp_path)
    longer = load_config(run / "config.yaml", ["train.epochs=5", "train.save_steps=3", "eval.max_new_tokens=7",
                                               "train.logging_steps=1"])
    RunDir(run.path).prepare(longer, resume=True)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 5
    assert resumable("eval.num_beams") and resumable("train.max_steps") and not resumable("train.lr")
    assert not resumable("evaluation")  # a prefix match needs the dot


def test_a_key_new_since_the_run_started_counts_as_its_default(tmp_path):
    run, cfg, _ = started(tmp_path)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["data"]["validation_ratio"]  # a run written before the key existed
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    RunDir(run.path).prepare(cfg, resume=True)
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(VlmtuneError, match=r"data.validation_ratio: 0.1 -> 0.2"):
        RunDir(run.path).prepare(load_config(overrides=[*cfg_overrides(cfg), "data.validation_ratio=0.2"]), resume=True)


def test_resuming_on_changed_data_is_refused(tmp_path):
    from PIL import Image

    run, cfg, data = started(tmp_path)
    run.check_resume_data(open_data(cfg)[1])  # the same data: fine
    Image.new("RGB", (32, 32), (9, 9, 9)).save(data / "pic_1.png")  # same name, other picture
    with pytest.raises(VlmtuneError, match=r"--resume on different data \(split train: content [0-9a-f]{64} now, "
                                           r"[0-9a-f]{64} in the run\)"):
        run.check_resume_data(open_data(cfg)[1])


def test_data_change_compares_rows_then_content():
    assert data_change(RECORD, json.loads(json.dumps(RECORD))) is None
    assert data_change(RECORD, {**RECORD, "validation": {"rows": 1, "content": "c3"}}) == \
        "split validation: 1 rows now, 0 in the run"
    assert data_change(RECORD, {**RECORD, "test": {"rows": 2, "fingerprint": "other", "content": "c2"}}) is None
    old = {"train": {"rows": 6, "fingerprint": "f1"}}  # a data.json from before content digests
    assert data_change(old, {"train": {"rows": 6, "fingerprint": "f9", "content": "c1"}}) == \
        "split train: fingerprint f9 now, f1 in the run"


def test_resume_without_a_complete_checkpoint_is_an_error_not_a_restart(tmp_path):
    run, cfg, _ = started(tmp_path)
    torn = run / "checkpoints/checkpoint-2"
    torn.mkdir(parents=True)
    (torn / "trainer_state.json").write_text("{")
    with pytest.raises(VlmtuneError, match=r"checkpoints: --resume found no complete checkpoint to continue from; "
                                           r"start again without --resume"):
        train_run(cfg, resume=True)
    assert not (run / "predictions").exists()


def test_resume_of_a_folder_that_holds_no_run_is_refused(tmp_path):
    cfg = load_config(overrides=[f"output_dir={tmp_path / 'never'}"])
    with pytest.raises(VlmtuneError, match="nothing to resume"):
        RunDir(tmp_path / "never").prepare(cfg, resume=True)
    assert not (tmp_path / "never").exists()


def test_fit_with_resume_and_no_checkpoint_raises(tmp_path):
    import torch

    from vlmtune.models.registry import LLAVA
    from vlmtune.training.fit import fit

    model, _ = tiny.llava()
    cfg = load_config(overrides=["train.max_steps=1"])
    with pytest.raises(VlmtuneError, match="no complete checkpoint"):
        fit(model, LLAVA, torch.float32, [], None, cfg, str(tmp_path / "none"), 0, resume=True)


def test_save_config_round_trip_is_not_a_change(tmp_path):
    cfg = load_config(overrides=["train.lr=2e-4", "train.projector_lr=1e-3", "train.bf16=false"])
    save_config(cfg, tmp_path / "config.yaml")
    (tmp_path / "vlmtune_run.json").write_text("{}")
    RunDir(tmp_path).check_resume_config(load_config(tmp_path / "config.yaml"))
