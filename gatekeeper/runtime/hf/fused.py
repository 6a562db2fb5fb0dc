"""LoRA layers that add their low-rank update into the base product in place, for scoring and decoding.

peft computes ``base(x) + lora_B(lora_A(x)) * scaling`` as three tensors the
size of the layer's whole output (the update, the scaled update, the sum).
On a CPU those passes over memory cost a quarter of a prefill's time at the
embedded model's size. Here the update is accumulated straight into the base
product (``addmm_``): the same arithmetic in another order, so a result moves
by float rounding only (the decoder settles near-ties on the plain path).

Only plain LoRA in inference qualifies: one active adapter, an ``nn.Linear``
base layer, no DoRA or other variant, no bias on ``lora_B``, adapter and
input of one dtype, not merged. Any other layer, and any call with the
adapters disabled (the base side), runs peft's own forward.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def _plain_lora_layers(model) -> list:
    from peft.tuners.lora.layer import Linear as LoraLinear

    layers = []
    for module in model.modules():
        if not isinstance(module, LoraLinear) or module.training or module.merged or module.lora_variant:
            continue
        names = [a for a in module.active_adapters if a in module.lora_A]
        base = module.base_layer
        if len(names) != 1 or type(base) is not torch.nn.Linear or base._forward_hooks or base._forward_pre_hooks:
            continue  # hooks on the base layer (offloading, say) must keep running
        if module.lora_B[names[0]].bias is not None:
            continue
        layers.append((module, names[0]))
    return layers


def _fused_forward(module, adapter: str, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    a, b = module.lora_A[adapter].weight, module.lora_B[adapter].weight
    if module.disable_adapters or args or kwargs or x.dtype != a.dtype:
        return type(module).forward(module, x, *args, **kwargs)
    base = module.base_layer
    out = F.linear(x, base.weight, base.bias)
    low = F.linear(x, a)
    out.view(-1, out.shape[-1]).addmm_(low.view(-1, low.shape[-1]), b.t(), alpha=module.scaling[adapter])
    return out


class FusedLora:
    """Inside ``with FusedLora(model):`` the model's plain LoRA layers run fused; ``plain()`` pauses that."""

    def __init__(self, model):
        self.layers = _plain_lora_layers(model)

    def __enter__(self) -> FusedLora:
        for module, adapter in self.layers:
            module.forward = functools.partial(_fused_forward, module, adapter)
        return self

    def __exit__(self, *exc) -> None:
        for module, _ in self.layers:
            vars(module).pop("forward", None)

    def plain(self, call, *args, **kwargs):
        """``call(*args, **kwargs)`` on peft's own forward (the path a result is held to)."""
        self.__exit__()
        try:
            return call(*args, **kwargs)
        finally:
            self.__enter__()
