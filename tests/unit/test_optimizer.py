"""The optimizer is Trainer's own (train.optim, betas, epsilon, decay exclusions), with projector_lr on top."""

import pytest
import torch
from transformers.optimization import Adafactor

import tiny
from vlmtune.config import load_config
from vlmtune.errors import VlmtuneError
from vlmtune.models.lora import apply_plan
from vlmtune.models.registry import LLAVA
from vlmtune.training.trainer import VlmTrainer, split_learning_rates, training_arguments


def optimizer(tmp_path, *overrides):
    cfg = load_config(overrides=["train.lr=1e-3", "train.projector_lr=2e-5", "train.weight_decay=0.1", *overrides])
    model = apply_plan(tiny.llava()[0], LLAVA, cfg.train.lora)
    args = training_arguments(cfg.train, str(tmp_path), bf16=False, has_eval=False, use_cpu=True)
    trainer = VlmTrainer(model=model, args=args, spec=LLAVA, projector_lr=cfg.train.projector_lr)
    opt = trainer.create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    return opt, {names[id(p)]: g for g in opt.param_groups for p in g["params"]}


def test_groups_keep_decay_exclusions_betas_and_the_projector_rate(tmp_path):
    opt, group_of = optimizer(tmp_path, "train.adam_beta1=0.8", "train.adam_beta2=0.95", "train.adam_epsilon=1e-6")
    assert isinstance(opt, torch.optim.AdamW)
    proj_w = "base_model.model.model.multi_modal_projector.modules_to_save.default.linear_1.weight"
    proj_b = proj_w.replace("weight", "bias")
    lora = next(n for n in group_of if "lora_A" in n)
    assert (group_of[proj_w]["lr"], group_of[proj_w]["weight_decay"]) == (2e-5, 0.1)
    assert (group_of[proj_b]["lr"], group_of[proj_b]["weight_decay"]) == (2e-5, 0.0)  # no decay on biases
    assert (group_of[lora]["lr"], group_of[lora]["weight_decay"]) == (1e-3, 0.1)
    assert all(g["betas"] == (0.8, 0.95) and g["eps"] == 1e-6 for g in opt.param_groups)


def test_norm_weights_get_no_decay(tmp_path):
    _, group_of = optimizer(tmp_path, "train.lora.targets=full")
    norms = [n for n in group_of if "norm" in n]
    assert norms and all(group_of[n]["weight_decay"] == 0.0 for n in norms)
    assert group_of["model.language_model.layers.0.self_attn.q_proj.weight"]["weight_decay"] == 0.1


@pytest.mark.parametrize(("optim", "cls"), [("adafactor", Adafactor), ("sgd", torch.optim.SGD)])
def test_train_optim_picks_the_optimizer_class(tmp_path, optim, cls):
    opt, group_of = optimizer(tmp_path, f"train.optim={optim}")
    assert type(opt) is cls
    assert {g["lr"] for g in group_of.values()} == {1e-3, 2e-5}


def test_an_optimizer_that_hides_its_groups_refuses_projector_lr():
    class Layerwise(torch.optim.SGD):  # like Trainer's LayerWiseDummyOptimizer: a dummy group
        pass

    p = torch.nn.Parameter(torch.zeros(2))
    opt = Layerwise([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(VlmtuneError, match="train.optim=galore_adamw_layerwise manages its own parameter groups"):
        split_learning_rates(opt, {id(p)}, 2e-5, "galore_adamw_layerwise")


def test_config_names_every_transformers_optimizer():
    from transformers.training_args import OptimizerNames

    from vlmtune.config import OPTIMIZERS

    assert set(OPTIMIZERS) == {o.value for o in OptimizerNames}
    with pytest.raises(VlmtuneError, match="train.optim='adamw' is invalid"):
        load_config(overrides=["train.optim=adamw"])
