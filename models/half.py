"""The question's forward on CPU with fp16-packed linear weights: ``half_weight_view(model, last_layer)``.

A question is a handful of tokens, so its forward to the deepest indexed layer is a chain of skinny
matrix products whose cost is reading the weights (about 230 MB of fp32 for SmolLM2-135M's first 17
layers). fbgemm's fp16 GEMM (``torch.ops.quantized.linear_dynamic_fp16``) keeps the weights packed in
fp16 and computes in fp32: half the bytes to read, activations untouched, outputs within ~2e-4 of fp32
(relative), so the question's SAE codes match the fp32 ones (see ``bench/bench_retrieval.py``, which
measures both side by side). Index builds keep the full-precision model; only the question uses this.

The view is a copy of the module tree along the paths to those linears; every other module and tensor
(embeddings, norms, later layers) is shared with the model, so it costs the packed weights only (~115 MB).
Packing takes about half a second on a 2-core CPU (spread over the torch threads), so a view is made once
per model and layer and kept while the model lives (every retriever over the same loaded model shares it).
"""

from __future__ import annotations

import copy
import weakref
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from s3attn.models.taps import decoder_layers


def pack_fp16(linear: nn.Linear) -> torch.Tensor:
    """``linear``'s weight and bias packed for ``linear_dynamic_fp16`` (~15 ms per 1M weights here)."""
    bias = None if linear.bias is None else linear.bias.detach().float()
    return torch.ops.quantized.linear_prepack_fp16(linear.weight.detach().float(), bias)


class HalfLinear(nn.Module):
    """``nn.Linear`` with its weight (and bias) packed for fbgemm's fp16 GEMM; input and output fp32."""

    def __init__(self, linear: nn.Linear, packed: torch.Tensor | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = pack_fp16(linear) if packed is None else packed

    def forward(self, x_NI: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic_fp16(x_NI, self.packed)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weights=fp16 (fbgemm)"


def half_weights_supported(model: nn.Module) -> bool:
    """fp16-packed linears apply to an fp32 model on CPU with the fbgemm (x86) quantized engine."""
    param = next(model.parameters(), None)
    engines = torch.backends.quantized.supported_engines
    return (
        param is not None
        and param.device.type == "cpu"
        and param.dtype == torch.float32
        and any(e in engines for e in ("fbgemm", "x86"))
    )


_VIEWS: weakref.WeakKeyDictionary[nn.Module, dict[int, nn.Module]] = weakref.WeakKeyDictionary()


def half_weight_view(model: nn.Module, last_layer: int) -> nn.Module:
    """``model`` with every ``nn.Linear`` of decoder layers ``0..last_layer`` replaced by :class:`HalfLinear`.

    The model itself is not changed. Where fp16 packing does not apply (:func:`half_weights_supported`: a
    GPU, a bf16 model, no fbgemm) the model is returned as it is. Views are kept per model and layer, so the
    weights of one model are packed once (the view holds them as they were then: make a new model, not
    new weights in place, to change them).
    """
    if not half_weights_supported(model):
        return model
    views = _VIEWS.setdefault(model, {})
    if last_layer not in views:
        views[last_layer] = _half_view(model, last_layer)
    return views[last_layer]


def _half_view(model: nn.Module, last_layer: int) -> nn.Module:
    decoder = decoder_layers(model)
    linears = [m for i in range(last_layer + 1) for m in decoder[i].modules() if type(m) is nn.Linear]
    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:  # the op releases the GIL
        packed = dict(zip(map(id, linears), pool.map(pack_fp16, linears)))

    def rebuilt(module: nn.Module) -> nn.Module:
        if id(module) in packed:
            return HalfLinear(module, packed[id(module)])
        children = {name: rebuilt(c) for name, c in module._modules.items() if c is not None}
        if all(children[name] is c for name, c in module._modules.items() if c is not None):
            return module  # nothing below it changes: shared as it is
        view = copy.copy(module)  # shallow: shares parameters and buffers
        view._modules = {**module._modules, **children}  # its own child table, so the model keeps its own
        return view

    return rebuilt(model)
