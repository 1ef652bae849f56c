"""bf16 weights: every trainable non-LoRA parameter keeps an fp32 master, so small updates are not lost.

Each test trains the same tiny model twice on the same data and seed, once loaded with
``model.dtype=bf16`` and once with fp32 weights (the reference, pure fp32 compute), at the shipped
LLaVA config's ``projector_lr=2e-5`` for 3 steps, and compares the update W_after - W_before of
the whole-trained parameters. With bf16 storage most elements cannot move by 2e-5 at all (bf16
keeps ~8 mantissa bits), so the update shrinks and turns; with fp32 masters it must match the
reference: relative L2 difference < REL_TOL and norm ratio within RATIO.

Measured on the code before fp32 masters: norm ratio 0.70 / 0.71 / 0.33 / 0.70 / 0.69 and relative
difference 0.85 / 0.85 / 0.97 / 0.86 / 0.86 (projector under lm+projector / projector alone /
image_newline / full / IDEFICS cross-attention layers). With them: ratio 1.000-1.003, difference
0.062 / 0.064 / 0.007 / 0.047 / 0.055.
The floor is bf16 compute itself: fp32 weights under bf16 autocast differ from the plain fp32 run
by 0.04 on the same update. The models get a checkpoint-like init (std 0.02): the tiny builders'
sharp 0.5 init makes Adam's 3-step update direction hinge on gradient signs that bf16 compute
flips (difference 0.2-0.3 even with fp32 weights and autocast).
"""

import pytest
import torch

import families_tiny
import tiny
from vlmtune.config import EvalConfig, ModelConfig, load_config
from vlmtune.evaluation.generate import generate_answers
from vlmtune.models.family import FamilySpec
from vlmtune.models.loading import load_for_inference, load_model
from vlmtune.training.fit import fit

REL_TOL = 0.1
RATIO = (0.95, 1.05)


def run_config(tmp_path, targets: str, bf16: str, *extra):
    return load_config(overrides=[f"output_dir={tmp_path}", "train.max_steps=3", "train.lr=2e-4",
                                  "train.projector_lr=2e-5", "train.batch_size=4", "train.logging_steps=1",
                                  "train.save_steps=-1", "train.eval_each_epoch=false", "train.warmup_ratio=0",
                                  "train.scheduler=constant", "train.lora.dropout=0", f"train.lora.targets={targets}",
                                  f"train.bf16={bf16}", *extra])


def base_name(name: str) -> str:
    name = name.removeprefix("base_model.model.")
    for wrapper in (".base_layer", ".modules_to_save.default", ".original_module"):
        name = name.replace(wrapper, "")
    return name


def updates(base_dir, tmp_path, dtype: str, targets: str, watched: tuple[str, ...], examples_of):
    """{base parameter name: W_after - W_before in fp32} for parameters under ``watched`` prefixes."""
    bf16 = "auto" if dtype == "bf16" else "false"  # the reference runs in plain fp32
    model, processor, spec, weights = load_model(ModelConfig(name=str(base_dir), dtype=dtype), training=True)
    before = {n: p.detach().float().clone() for n, p in model.named_parameters() if n.startswith(watched)}
    result = fit(model, spec, weights, examples_of(processor, spec), None, run_config(tmp_path / dtype, targets, bf16),
                 str(tmp_path / dtype), processor.tokenizer.pad_token_id)
    trained = {base_name(n): p for n, p in result.model.named_parameters()
               if p.requires_grad and "lora_" not in n and base_name(n) in before}
    assert set(trained) == set(before), "every watched parameter trains"
    optimized = {id(p): p.dtype for g in result.trainer.optimizer.param_groups for p in g["params"]}
    assert all(optimized[id(p)] == torch.float32 for p in trained.values())  # the optimizer steps the masters
    return {n: trained[n].detach().float() - before[n] for n in before}, result.model, processor, spec


def compare(test: dict, ref: dict) -> tuple[float, float]:
    """(norm ratio, relative L2 difference) of two update sets, all parameters flattened together."""
    a = torch.cat([test[n].flatten() for n in sorted(ref)])
    b = torch.cat([ref[n].flatten() for n in sorted(ref)])
    return float(a.norm() / b.norm()), float((a - b).norm() / b.norm())


def assert_matches_reference(tmp_path, base_dir, targets: str, watched: tuple[str, ...], examples_of):
    ref, *_ = updates(base_dir, tmp_path, "fp32", targets, watched, examples_of)
    test, model, processor, spec = updates(base_dir, tmp_path, "bf16", targets, watched, examples_of)
    ratio, rel = compare(test, ref)
    print(f"{targets} {watched}: update norm ratio {ratio:.3f}, relative difference {rel:.4f}")
    assert RATIO[0] < ratio < RATIO[1] and rel < REL_TOL, (ratio, rel)
    return model, processor, spec


def checkpoint_like(model, processor, path):
    """Save ``model`` re-initialised with std 0.02 (as published checkpoints are trained from)."""
    model.config.initializer_range = model.config.get_text_config().initializer_range = 0.02
    torch.manual_seed(1)
    model.apply(model._init_weights)
    return families_tiny.save(model, processor, path)


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return checkpoint_like(*tiny.llava(), tmp_path_factory.mktemp("llava"))


def llava_examples(processor, spec: FamilySpec):
    from test_training import examples

    return examples(processor)


def generates(model, processor, spec):
    """Right after training (bf16 frozen weights, fp32 masters) generation runs without a dtype clash."""
    images = families_tiny.pictures(2)
    answers = generate_answers(model, processor, spec, images, ["Describe this picture."] * 2,
                               EvalConfig(max_new_tokens=3, batch_size=2), desc="gen")
    assert len(answers) == 2


def reloads(model, tmp_path, watched: tuple[str, ...]):
    """The saved adapter holds the fp32 masters exactly, and loads onto a bf16 base as them rounded."""
    model.save_pretrained(tmp_path / "adapter")
    masters = {base_name(n): p for n, p in model.named_parameters() if "lora_" not in n and "original_module" not in n}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        reloaded, *_ = load_for_inference(tmp_path / "adapter", dtype=name, device=torch.device("cpu"))
        checked = [n for n, v in reloaded.named_parameters() if base_name(n).startswith(watched)
                   and "original_module" not in n]
        params = dict(reloaded.named_parameters())
        for name in checked:
            want = masters[base_name(name)].detach().to(dtype)
            assert params[name].dtype == dtype and torch.equal(params[name], want), name
        assert checked


def test_projector_update_matches_fp32_reference(tmp_path, llava_dir):
    model, processor, spec = assert_matches_reference(tmp_path, llava_dir, "lm+projector",
                                                      ("model.multi_modal_projector.",), llava_examples)
    generates(model, processor, spec)
    reloads(model, tmp_path, ("model.multi_modal_projector.",))


def test_projector_only_update_matches_fp32_reference(tmp_path, llava_dir):
    """No PEFT wrapper (stage-1 alignment): the projector itself is the master."""
    model, processor, spec = assert_matches_reference(tmp_path, llava_dir, "projector",
                                                      ("model.multi_modal_projector.",), llava_examples)
    generates(model, processor, spec)


def test_image_newline_update_matches_fp32_reference(tmp_path):
    base = checkpoint_like(*families_tiny.llava_next(), tmp_path / "base")
    model, processor, spec = assert_matches_reference(tmp_path, base, "lm+projector", ("model.image_newline",),
                                                      families_tiny.examples)
    generates(model, processor, spec)
    reloads(model, tmp_path, ("model.image_newline", "model.multi_modal_projector."))


def test_full_update_matches_fp32_reference(tmp_path, llava_dir):
    model, processor, spec = assert_matches_reference(tmp_path, llava_dir, "full", ("model.",), llava_examples)
    generates(model, processor, spec)


def test_idefics_cross_attention_layers_and_gates_match_fp32_reference(tmp_path):
    """IDEFICS trains its gated cross-attention layers whole (tanh gates included): before fp32
    masters the gates did not move at all (3 steps of 2e-5 on a gate of 1.0)."""
    import families_tiny_b

    base = checkpoint_like(*families_tiny_b.idefics(), tmp_path / "base")
    model, processor, spec = assert_matches_reference(tmp_path, base, "lm+projector",
                                                      ("model.gated_cross_attn_layers.",), families_tiny.examples)
    gates = [p for n, p in model.named_parameters() if "modules_to_save" in n and ".alpha_" in n]
    assert gates and all(g.dtype == torch.float32 and not torch.all(g == 1.0) for g in gates)
    generates(model, processor, spec)
