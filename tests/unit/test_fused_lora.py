"""LoRA's update added inside an addmm (training/fused_lora.py) against PEFT's own sum.

Hand-computed: with small integers every product and sum is exact in bf16, so the fused layer must
give exactly W x + s * B A x. On the tiny model under bf16 autocast the fused loss and gradients
agree with PEFT's to bf16 rounding (it rounds the sum once, PEFT twice); without autocast the
layer is PEFT's own formula, bit for bit. Only fusable layers are touched, and only in the block.
"""

import copy

import torch
from peft import LoraConfig as PeftLoraConfig, get_peft_model

from test_training import examples
from test_training_levers import bf16_lora_model, tuners
from vlmtune.models.dtype import keep_fp32_masters
from vlmtune.training.collate import Collator
from vlmtune.training.fused_lora import fused_lora
from vlmtune.training.trainer import answer_loss


class One(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 2, bias=False)

    def forward(self, x):
        return self.proj(x)


def integer_layer(dropout=0.0):
    """W = [[1, 2, 0], [0, 1, -1]], A = [[1, 0, 1]], B = [[1], [-2]], r=1, alpha=2: scaling 2."""
    model = get_peft_model(One(), PeftLoraConfig(r=1, lora_alpha=2, lora_dropout=dropout, target_modules=["proj"]))
    layer = model.base_model.model.proj
    with torch.no_grad():
        layer.base_layer.weight.copy_(torch.tensor([[1.0, 2, 0], [0, 1, -1]]))
        layer.lora_A["default"].weight.copy_(torch.tensor([[1.0, 0, 1]]))
        layer.lora_B["default"].weight.copy_(torch.tensor([[1.0], [-2]]))
    model.base_model.model.to(torch.bfloat16)
    keep_fp32_masters(model, torch.bfloat16)
    return model, layer


def test_fused_layer_gives_the_hand_computed_sum_exactly():
    model, layer = integer_layer()
    x = torch.tensor([[[1.0, 2, 3], [4, 0, -1]]], dtype=torch.bfloat16)
    # W x = [5, -1] and [4, 1]; A x = 4 and 3; + 2 * B * Ax = [8, -16] and [6, -12]
    want = torch.tensor([[[13.0, -17], [10, -11]]])
    with torch.autocast("cpu", dtype=torch.bfloat16), fused_lora(model) as count:
        assert count == 1 and layer.lora_variant
        got = model(x)
    assert got.dtype == torch.bfloat16 and torch.equal(got.float(), want)
    assert not layer.lora_variant


def test_layers_with_dropout_are_left_to_peft():
    model, layer = integer_layer(dropout=0.1)
    with fused_lora(model) as count:
        assert count == 0 and not layer.lora_variant


def tiny_lora():
    model, processor, spec = bf16_lora_model()
    batch = Collator(processor.tokenizer.pad_token_id)(examples(processor, spec))
    return model, spec, batch, tuners(model)


def loss_and_grads(model, spec, batch, fused: bool, autocast: bool = True):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), fused_lora(model, fused):
        loss = answer_loss(model, spec, batch)[0]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_fused_loss_and_gradients_are_as_close_to_fp32_as_peft_under_autocast():
    """bf16 rounding compounds over the layers (PEFT's own gradients are a few % off fp32 here), so
    the bar is PEFT's own distance to an fp32 reference of the same weights, not equality."""
    model, spec, batch, layers = tiny_lora()
    loss, grads = loss_and_grads(model, spec, batch, fused=False)
    fused_loss, fused_grads = loss_and_grads(model, spec, batch, fused=True)
    assert all(not layer.lora_variant for layer in layers)
    ref_loss, ref = loss_and_grads(copy.deepcopy(model).float(), spec, batch, fused=False, autocast=False)
    assert abs(fused_loss - ref_loss) <= 1.5 * abs(loss - ref_loss) + 1e-3
    assert grads.keys() == fused_grads.keys() == ref.keys() and sum("lora_A" in n for n in grads) == len(layers)
    def error(g):
        return sum((g[n] - r).norm() ** 2 for n, r in ref.items()) ** 0.5 / sum(r.norm() ** 2 for r in ref.values()) ** 0.5
    assert error(fused_grads) <= 1.25 * error(grads) + 1e-3, (error(fused_grads), error(grads))


def test_without_autocast_the_fused_layer_is_peft_bit_for_bit():
    model, spec, batch, _ = tiny_lora()
    model.float()
    loss, grads = loss_and_grads(model, spec, batch, fused=False, autocast=False)
    fused_loss, fused_grads = loss_and_grads(model, spec, batch, fused=True, autocast=False)
    assert torch.equal(loss, fused_loss) and all(torch.equal(fused_grads[n], g) for n, g in grads.items())
