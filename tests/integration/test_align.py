"""`vlmtune align` at tiny scale: it trains only the projector and writes a loadable artifact."""

import pytest
import torch

from vlmtune.models.default import DefaultBaseSpec, ensure_default_base, load_projector
from vlmtune.stages.align import ALIGN_IMAGE_SIZE, run_align


@pytest.mark.slow
def test_align_writes_a_projector_that_differs_from_its_random_start(tmp_path, cache):
    from safetensors.torch import load_file

    out = tmp_path / "projector.safetensors"
    info = run_align(out=out, steps=2, n_images=40, seed=0,
                     overrides=["train.batch_size=4", "eval.max_new_tokens=4", "train.bf16=false", "train.lr=1e-2",
                                "train.warmup_ratio=0"])
    tensors, spec, meta = load_projector(out)
    assert spec == DefaultBaseSpec(seed=0) and meta["steps"] == 2 and meta["aligned_at_px"] == ALIGN_IMAGE_SIZE
    assert set(meta["held_out"]) >= {"exact", "token_f1", "rouge_l"} and info["n_images"] == 40
    start = ensure_default_base(projector=None, spec=DefaultBaseSpec(seed=0, image_size=ALIGN_IMAGE_SIZE))
    before = load_file(start / "model.safetensors")
    after = load_file(ensure_default_base(projector=out) / "model.safetensors")
    initial = {k.split("multi_modal_projector.")[1]: v for k, v in before.items() if "multi_modal_projector." in k}
    assert tensors.keys() == initial.keys()
    # The artifact is stored in bf16: compare with the random start rounded the same way.
    assert any(not torch.equal(tensors[k], initial[k].to(torch.bfloat16).float()) for k in tensors)  # it trained
    # The LM and the vision tower stayed frozen: the aligned base differs from the random one only in the projector.
    frozen = [k for k in before if k.endswith(("layers.0.self_attn.q_proj.weight", "encoder.layer.0.mlp.fc1.weight"))]
    assert len(frozen) == 2
    for key in frozen:
        assert torch.equal(before[key], after[key])
