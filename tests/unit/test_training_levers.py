"""Two exact levers fit pulls for the length of trainer.train, and puts back afterwards.

Eager attention on a CPU (model.attn_implementation=auto): SDPA's CPU flash backward is slow;
the model is loaded, and generates, with SDPA.

Under bf16 autocast, fit turns off PEFT's cast of every LoRA input to the adapter's fp32.

The cast is a bf16 -> fp32 copy that autocast casts straight back to bf16 for the matmul: an exact
round trip that costs two copies of each input, forward and backward. Without it the loss and
every gradient must be bit-identical; after training the casts are back, so generation without
autocast (fp32 adapters on bf16 weights) still works.
"""

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import TrainerCallback

import tiny
from test_training import config, examples
from vlmtune.config import LoraConfig
from vlmtune.models.dtype import keep_fp32_masters
from vlmtune.models.lora import apply_plan
from vlmtune.models.registry import REGISTRY
from vlmtune.training.collate import Collator
from vlmtune.training.fit import fit
from vlmtune.training.trainer import answer_loss


def tuners(model) -> list:
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def bf16_lora_model():
    model, processor = tiny.llava()
    model.to(torch.bfloat16)
    spec = REGISTRY["llava"]
    model = apply_plan(model, spec, LoraConfig(targets="lm+projector", r=4, alpha=8, dropout=0.0))
    keep_fp32_masters(model, torch.bfloat16)
    torch.manual_seed(0)
    for layer in tuners(model):  # lora_B starts at zero: give A a gradient to compare
        torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.1)
    return model, processor, spec


def loss_and_grads(model, spec, batch, cast: bool):
    for layer in tuners(model):
        layer.cast_input_dtype_enabled = cast
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = answer_loss(model, spec, batch)[0]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_lora_without_input_casts_gives_the_same_loss_and_gradients_bit_for_bit():
    model, processor, spec = bf16_lora_model()
    assert {layer.lora_A["default"].weight.dtype for layer in tuners(model)} == {torch.float32}
    batch = Collator(processor.tokenizer.pad_token_id)(examples(processor, spec))
    loss_on, grads_on = loss_and_grads(model, spec, batch, cast=True)
    loss_off, grads_off = loss_and_grads(model, spec, batch, cast=False)
    assert torch.equal(loss_on, loss_off)
    assert grads_on.keys() == grads_off.keys() and any("lora_A" in n for n in grads_on)
    assert all(torch.equal(grads_on[n], grads_off[n]) for n in grads_on)


class CastsSeen(TrainerCallback):
    def __init__(self):
        self.seen = []

    def on_step_begin(self, args, state, control, model=None, **kw):
        self.seen.append(({layer.cast_input_dtype_enabled for layer in tuners(model)},
                          model.get_base_model().config._attn_implementation,
                          {type(v).__name__ for layer in tuners(model) for v in layer.lora_variant.values()}))


def test_fit_turns_casts_off_and_eager_attention_on_for_training_only(tmp_path):
    model, processor = tiny.llava()
    model.to(torch.bfloat16)
    spec = REGISTRY["llava"]
    seen = CastsSeen()
    result = fit(model, spec, torch.bfloat16, examples(processor, spec), None,
                 config(tmp_path, "train.max_steps=2", "train.bf16=true", "train.lora.targets=lm+projector"),
                 str(tmp_path), processor.tokenizer.pad_token_id, callbacks=(seen,))
    assert model.config._attn_implementation == "sdpa"  # as tiny.llava() builds it, and load_model loads
    assert seen.seen == [({False}, "eager", {"FusedAddmm"}), ({False}, "eager", {"FusedAddmm"})]
    assert {layer.cast_input_dtype_enabled for layer in tuners(result.model)} == {True}
    assert all(not layer.lora_variant for layer in tuners(result.model))  # PEFT's own layers again
    assert result.model.get_base_model().config._attn_implementation == "sdpa"


def test_fit_without_autocast_keeps_the_casts_and_an_explicit_kernel_wins(tmp_path):
    model, processor = tiny.llava()
    spec = REGISTRY["llava"]
    seen = CastsSeen()
    fit(model, spec, torch.float32, examples(processor, spec), None,
        config(tmp_path, "train.max_steps=1", "train.bf16=false", "train.lora.targets=lm+projector",
               "model.attn_implementation=sdpa"),
        str(tmp_path), processor.tokenizer.pad_token_id, callbacks=(seen,))
    assert seen.seen == [({True}, "sdpa", set())]
