import shutil
from collections import namedtuple

import pytest
import torch

import tiny
from vlmtune.errors import VlmtuneError
from vlmtune.training.checkpoints import checkpoint_problem, newest_valid_checkpoint, require_disk_room

Usage = namedtuple("Usage", "total used free")


def test_refuses_to_start_without_room_for_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(10**9, 10**9 - 5 * 2**20, 5 * 2**20))
    # 1M trainable params: 4 MB weights + 8 MB Adam state = 12 MB per copy; 2 copies + 10 % = 26.4 MB
    with pytest.raises(VlmtuneError, match="5 MB free but checkpoints need about 26 MB"):
        require_disk_room(tmp_path, trainable=2**20, total=10 * 2**20, full=False)
    require_disk_room(tmp_path, trainable=2**15, total=10 * 2**20, full=False)  # 0.8 MB fits


def test_only_complete_checkpoints_are_resumed_from(tmp_path):
    from safetensors.torch import save_file

    good = tmp_path / "checkpoint-2"
    good.mkdir()
    (good / "trainer_state.json").write_text('{"global_step": 2}')
    save_file({"w": torch.ones(3)}, str(good / "adapter_model.safetensors"))
    for name in ("optimizer.pt", "scheduler.pt"):
        torch.save({"x": torch.zeros(2)}, good / name)
    torch.save({}, good / "rng_state.pth")
    assert checkpoint_problem(good) is None
    newer = tmp_path / "checkpoint-10"  # numeric order, not lexical: 10 > 2
    shutil.copytree(good, newer)
    assert newest_valid_checkpoint(tmp_path) == newer
    (newer / "adapter_model.safetensors").write_bytes((newer / "adapter_model.safetensors").read_bytes()[:-4])
    assert "weights unreadable" in checkpoint_problem(newer)
    assert newest_valid_checkpoint(tmp_path) == good
    (good / "trainer_state.json").unlink()
    assert newest_valid_checkpoint(tmp_path) is None


def test_early_stopping_stops_when_eval_loss_stops_improving(tmp_path):
    from vlmtune.config import load_config
    from vlmtune.models.prompting import PromptAnswerTokenizer
    from vlmtune.models.registry import LLAVA
    from vlmtune.training.fit import fit
    from PIL import Image

    model, processor = tiny.llava()
    enc = PromptAnswerTokenizer(processor, LLAVA, 64)
    train = [enc.encode(Image.new("RGB", (30, 30), (i * 40, 0, 0)), "Describe.", "a white rook") for i in range(4)]
    evals = [enc.encode(Image.new("RGB", (30, 30), (0, 0, 200)), "Describe.", "a black king")]
    # lr 0: eval loss never improves, so patience 1 stops after the second evaluation
    cfg = load_config(overrides=["train.epochs=20", "train.lr=1e-12", "train.batch_size=4", "train.bf16=false",
                                 "train.early_stopping_patience=1", "train.save_steps=0", "train.logging_steps=1"])
    result = fit(model, LLAVA, torch.float32, train, evals, cfg, str(tmp_path), tiny.VOCAB["<pad>"])
    evals_done = [h for h in result.log_history if "eval_loss" in h]
    assert len(evals_done) == 2 and result.trainer.state.global_step == 2


def _state_files(folder):
    (folder / "trainer_state.json").write_text('{"global_step": 4}')
    for name in ("optimizer.pt", "scheduler.pt"):
        torch.save({"x": torch.zeros(2)}, folder / name)
    torch.save({}, folder / "rng_state.pth")


def test_a_checkpoint_sharded_by_transformers_counts_as_complete_only_with_every_shard(tmp_path):
    model, _ = tiny.llava()
    ckpt = tmp_path / "checkpoint-4"
    model.save_pretrained(ckpt, max_shard_size="100KB")  # what Trainer writes for a large full fine-tune
    shards = sorted(ckpt.glob("model-*.safetensors"))
    assert (ckpt / "model.safetensors.index.json").is_file() and len(shards) > 2
    _state_files(ckpt)
    assert checkpoint_problem(ckpt) is None
    assert newest_valid_checkpoint(tmp_path) == ckpt

    shards[1].write_bytes(shards[1].read_bytes()[:-8])  # torn mid-save
    assert "weights unreadable" in checkpoint_problem(ckpt)
    shards[1].unlink()
    assert f"shard {shards[1].name} listed in model.safetensors.index.json is missing" in checkpoint_problem(ckpt)
    assert newest_valid_checkpoint(tmp_path) is None


def test_a_shard_without_a_tensor_its_index_lists_is_incomplete(tmp_path):
    import json

    from safetensors.torch import save_file

    ckpt = tmp_path / "checkpoint-2"
    ckpt.mkdir()
    save_file({"a": torch.ones(2)}, str(ckpt / "model-00001-of-00001.safetensors"))
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00001.safetensors", "b": "model-00001-of-00001.safetensors"}}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    _state_files(ckpt)
    assert "1 tensor(s) listed in model.safetensors.index.json are in no shard (first: b)" in checkpoint_problem(ckpt)
