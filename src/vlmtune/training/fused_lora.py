"""LoRA's update added inside the matmul that makes it, for the length of training.

PEFT computes a LoRA linear as ``base(x) + lora_B(lora_A(x)) * scaling``: the product comes out
as a full-width activation, is multiplied by the scale, then added to the base output, and the
backward repeats the multiply. ``addmm(base_out, lora_A(x), B^T, alpha=scaling)`` gives the same
sum with the scale applied to the rank-r product and the add done by the GEMM's accumulate: two
full-width elementwise passes fewer each way. On the embedded default's CPU step these passes
were ~17 % of a profile (bench/README.md). It rounds once where PEFT rounds twice, so under bf16
autocast outputs agree to bf16 rounding, not bit for bit (tests/unit/test_fused_lora.py).

It goes in through PEFT's own extension point, a ``LoraVariant`` per adapter, only where the
vanilla formula applies (no dropout, no LoRA bias, no DoRA or other variant, plain
``lora.Linear``), and only for the ``with`` block: merging, saving and generation afterwards see
the untouched PEFT layers.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def _variant_class():
    from peft.tuners.lora.layer import LoraVariant

    class FusedAddmm(LoraVariant):
        @staticmethod
        def init(module, adapter_name: str, **kwargs) -> None:
            pass

        @staticmethod
        def merge_safe(module, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
            return orig_weight + module.get_delta_weight(active_adapter).to(orig_weight.dtype)

        @staticmethod
        def merge_unsafe(module, active_adapter: str, orig_weight: torch.Tensor) -> None:
            orig_weight.data += module.get_delta_weight(active_adapter).to(orig_weight.dtype)

        @staticmethod
        def unmerge(module, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
            return orig_weight - module.get_delta_weight(active_adapter).to(orig_weight.dtype)

        @staticmethod
        def forward(module, active_adapter: str, x: torch.Tensor, result: torch.Tensor, **kwargs) -> torch.Tensor:
            lora_a, lora_b = module.lora_A[active_adapter], module.lora_B[active_adapter]
            scaling = module.scaling[active_adapter]
            if not torch.is_autocast_enabled(result.device.type):  # dtypes may differ: PEFT's own sum
                return result + lora_b(lora_a(x)) * scaling
            low = lora_a(x)  # [..., r]; autocast runs it, and the addmm, in its low precision
            out = torch.addmm(result.reshape(-1, result.shape[-1]), low.reshape(-1, low.shape[-1]),
                              lora_b.weight.t(), alpha=scaling)
            return out.view(result.shape)

    return FusedAddmm


def fusable(module: nn.Module, adapter: str) -> bool:
    """Where the vanilla formula is what PEFT would compute for this adapter."""
    from peft.tuners.lora.layer import Linear

    return (type(module) is Linear and adapter in module.lora_A and adapter not in module.lora_variant
            and isinstance(module.lora_dropout[adapter], nn.Identity)
            and module.lora_B[adapter].bias is None and isinstance(module.scaling[adapter], (int, float)))


@contextmanager
def fused_lora(model: nn.Module, active: bool = True):
    """Fuse every fusable LoRA linear of ``model`` for the ``with`` block (all of them, or none
    when not ``active``); PEFT's layers exactly as they were afterwards. Yields the count fused."""
    installed = []
    if active:
        variant = _variant_class()()
        for module in model.modules():
            for adapter in list(getattr(module, "lora_A", {}) or {}):
                if fusable(module, adapter):
                    module.lora_variant[adapter] = variant
                    installed.append((module, adapter))
    try:
        yield len(installed)
    finally:
        for module, adapter in installed:
            module.lora_variant.pop(adapter, None)
