"""Several processes: the launch hand-over, what the main process alone does, refused combinations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from vlmtune.config import ModelConfig
from vlmtune.errors import VlmtuneError
from vlmtune.models.loading import placement
from vlmtune.stages.launch import accelerate_command, relaunch, without_launch_options
from vlmtune.training import distributed

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv, expected", [
    (["train", "a=1", "--launch", "accelerate", "--launch-config", "c.yaml", "-c", "x.yaml"], ["train", "a=1", "-c", "x.yaml"]),
    (["train", "--launch=accelerate", "--launch-config=c.yaml", "--resume"], ["train", "--resume"]),
])
def test_launch_options_are_dropped_from_the_relaunched_command(argv, expected):
    assert without_launch_options(argv) == expected


def test_accelerate_command_reuses_the_same_arguments(monkeypatch, tmp_path):
    monkeypatch.setattr("shutil.which", lambda name, path=None: f"/bin/{name}")
    config = tmp_path / "ddp.yaml"
    config.write_text("distributed_type: MULTI_GPU\n")
    command = accelerate_command(["train", "train.lr=1e-4", "--launch", "accelerate"], config)
    assert command == ["/bin/accelerate", "launch", "--config_file", str(config), "-m", "vlmtune", "train", "train.lr=1e-4"]
    with pytest.raises(VlmtuneError, match="--launch-config"):
        accelerate_command(["train"], tmp_path / "missing.yaml")


def test_relaunch_refuses_twice_launched_and_unknown_launchers(monkeypatch):
    with pytest.raises(VlmtuneError, match="only 'accelerate'"):
        relaunch("slurm", ["train"], None)
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(VlmtuneError, match="already started by a launcher"):
        relaunch("accelerate", ["train"], None)


def test_python_dash_m_vlmtune_is_the_cli():
    out = subprocess.run([sys.executable, "-m", "vlmtune", "--help"], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0 and "plan" in out.stdout and "train" in out.stdout


@pytest.mark.parametrize("env, quantization, device_map, match", [
    ({"ACCELERATE_USE_FSDP": "true"}, "4bit", None, "with FSDP"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "4bit", None, "with ZeRO-3"),
    ({"WORLD_SIZE": "2"}, "none", "auto", "cannot be combined with several processes"),
])
def test_impossible_combinations_are_refused_in_one_line(monkeypatch, env, quantization, device_map, match):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(VlmtuneError, match=match):
        distributed.check_launch(quantization, device_map)


def test_qlora_with_ddp_and_zero2_is_allowed(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    distributed.check_launch("4bit", None)  # DDP: each process loads its 4-bit copy onto its GPU
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    distributed.check_launch("4bit", None)


def test_placement_per_process_and_device_map():
    cuda1 = torch.device("cuda", 1)
    assert placement(ModelConfig(quantization="4bit"), cuda1, quant=object()) == {"": cuda1}  # LOCAL_RANK's GPU
    assert placement(ModelConfig(), cuda1, quant=None) is None
    assert placement(ModelConfig(device_map="auto"), cuda1, quant=None) == "auto"
    with pytest.raises(VlmtuneError, match="model.device_map=auto.*CUDA"):
        placement(ModelConfig(device_map="auto"), torch.device("cpu"), quant=None)


def test_save_trained_gathers_when_sharded(monkeypatch, tmp_path):
    calls = []
    model = SimpleNamespace(save_pretrained=lambda folder: calls.append(("model", folder)))
    plugin = SimpleNamespace(set_state_dict_type=lambda kind: calls.append(("state_dict", kind)))
    trainer = SimpleNamespace(save_model=lambda folder: calls.append(("trainer", folder)),
                              accelerator=SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin)))
    distributed.save_trained(model, trainer, tmp_path)
    assert calls == [("model", tmp_path)]
    calls.clear()
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    distributed.save_trained(model, trainer, tmp_path)
    assert calls == [("state_dict", "FULL_STATE_DICT"), ("trainer", str(tmp_path))]


def test_one_process_is_the_main_one():
    assert not distributed.launched() and distributed.is_main_process()
    distributed.wait_for_everyone()  # no process group: returns at once


def test_a_non_main_process_trains_but_writes_no_run_dir_evaluation_or_report(tmp_path, tiny_model_dir, monkeypatch):
    """Under N processes, the base/tuned evaluation and the report happen once (on the main process)."""
    import tiny
    from vlmtune.config import load_config
    from vlmtune.stages import train as train_stage

    monkeypatch.setattr(train_stage, "is_main_process", lambda: False)
    monkeypatch.setattr(distributed, "is_main_process", lambda: False)  # save_trained's own check
    evaluated = []
    monkeypatch.setattr(train_stage, "predict_split", lambda *a, **k: evaluated.append(1) or [])
    data = tiny.caption_folder(tmp_path / "data", n=8)
    run = tmp_path / "run"
    cfg = load_config(overrides=[f"output_dir={run}", f"model.name={tiny_model_dir}", f"data.path={data}",
                                 "train.max_steps=2", "train.batch_size=2", "train.bf16=false", "train.save_steps=-1",
                                 "train.eval_each_epoch=false"])
    assert train_stage.train_run(cfg) == {}
    assert evaluated == []
    written = {p.name for p in run.iterdir()} if run.exists() else set()
    assert not written & {"vlmtune_run.json", "data.json", "predictions", "report.html", "metrics.json", "adapter"}


def test_fsdp_turns_the_feature_cache_off(monkeypatch):
    """The cache applies the projector outside the model's forward, where FSDP keeps it sharded."""
    from vlmtune.config import load_config
    from vlmtune.models.registry import family_for
    from vlmtune.training.fit import uses_feature_cache

    cfg, spec = load_config(), family_for("llava")
    assert uses_feature_cache(spec, cfg)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert not uses_feature_cache(spec, cfg)
