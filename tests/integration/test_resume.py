"""kill -9 in the middle of training, resume, and end with the same adapter as an uninterrupted run."""

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

import tiny
from vlmtune.config import load_config
from vlmtune.stages.train import train_run
from vlmtune.training.checkpoints import checkpoint_problem, newest_valid_checkpoint

# Sleeps after every step so the parent can kill it between checkpoints.
SLOW_TRAIN = """
import sys, time
from transformers import TrainerCallback
import vlmtune.stages.train as stage
from vlmtune.config import load_config

class Slow(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        time.sleep(0.7)

original = stage.fit
stage.fit = lambda *a, **k: original(*a, **{**k, "callbacks": [Slow()]})
stage.train_run(load_config(overrides=sys.argv[1:]))
"""


def overrides(model_dir, data, out):
    return [f"model.name={model_dir}", f"data.path={data}", f"output_dir={out}", "train.max_steps=8",
            "train.save_steps=2", "train.save_total_limit=3", "train.batch_size=2", "train.bf16=false",
            "train.lr=1e-2", "train.eval_each_epoch=false", "eval.before=false", "eval.max_new_tokens=3"]


@pytest.mark.slow
def test_kill_mid_training_then_resume_matches_uninterrupted(tmp_path, tiny_model_dir):
    data = tiny.caption_folder(tmp_path / "data")
    train_run(load_config(overrides=overrides(tiny_model_dir, data, tmp_path / "straight")))
    want = load_file(tmp_path / "straight/adapter/adapter_model.safetensors")

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_TRAIN, *overrides(tiny_model_dir, data, out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt4 = out / "checkpoints/checkpoint-4"
    deadline = time.time() + 240
    while time.time() < deadline and not (ckpt4.is_dir() and checkpoint_problem(ckpt4) is None):
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter").exists()
    for later in out.glob("checkpoints/checkpoint-*"):
        if int(later.name.split("-")[1]) > 4:
            shutil.rmtree(later)
    # A checkpoint torn by a crash mid-save: newer, but its optimizer state is cut short.
    torn = out / "checkpoints/checkpoint-6"
    shutil.copytree(ckpt4, torn)
    state = json.loads((torn / "trainer_state.json").read_text())
    (torn / "trainer_state.json").write_text(json.dumps({**state, "global_step": 6}))
    (torn / "optimizer.pt").write_bytes((torn / "optimizer.pt").read_bytes()[:100])
    assert "optimizer.pt" in checkpoint_problem(torn)
    assert newest_valid_checkpoint(out / "checkpoints") == ckpt4

    train_run(load_config(out / "config.yaml"), resume=True)
    got = load_file(out / "adapter/adapter_model.safetensors")
    assert got.keys() == want.keys()
    for key in want:
        assert (got[key] - want[key]).abs().max().item() < 1e-6, key
    assert json.loads((out / "vlmtune_run.json").read_text())["status"] == "done"
