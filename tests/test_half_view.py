"""The fp16-weight view of the question forward: linears swapped up to the deepest tap, the model itself
untouched, taps as fp32's to fp16 rounding, and the model returned as it is where fbgemm does not apply."""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHS, TINY_LAYERS, TINY_VOCAB, tiny_model
from torch import nn

from s3attn.models.half import HalfLinear, half_weight_view, half_weights_supported
from s3attn.models.taps import decoder_layers, tap_heads

pytestmark = pytest.mark.skipif(
    not half_weights_supported(tiny_model("llama")), reason="fbgemm fp16 GEMM not available here"
)


@pytest.mark.parametrize("arch", ARCHS)
def test_view_swaps_linears_up_to_the_layer_and_keeps_the_model(arch):
    model = tiny_model(arch)
    last = TINY_LAYERS - 2
    view = half_weight_view(model, last)
    for i, (mine, theirs) in enumerate(zip(decoder_layers(model), decoder_layers(view))):
        linears = [type(m) for m in theirs.modules() if isinstance(m, (nn.Linear, HalfLinear))]
        assert linears and all(t is (HalfLinear if i <= last else nn.Linear) for t in linears), (i, linears)
        assert all(type(m) is not HalfLinear for m in mine.modules())  # the model is not changed
        if i > last:
            assert theirs is mine  # shared, not copied
    assert view.model.embed_tokens.weight is model.model.embed_tokens.weight
    assert type(model.lm_head) is nn.Linear and view.lm_head is model.lm_head


@pytest.mark.parametrize("arch", ARCHS)
def test_view_taps_match_fp32(arch):
    model = tiny_model(arch)
    view = half_weight_view(model, TINY_LAYERS - 1)
    ids = torch.randint(3, TINY_VOCAB, (1, 12), generator=torch.Generator().manual_seed(3))
    ref = tap_heads(model, ids, list(range(TINY_LAYERS)))
    got = tap_heads(view, ids, list(range(TINY_LAYERS)))
    for layer in range(TINY_LAYERS):
        for a, b in ((ref.keys[layer], got.keys[layer]), (ref.queries[layer], got.queries[layer])):
            assert not torch.equal(a, b)  # really another computation
            assert (b - a).norm() / a.norm() < 5e-3  # fp16 weight rounding (~2e-4 per layer), no more
            cos = torch.nn.functional.cosine_similarity(a.flatten(0, 2), b.flatten(0, 2), dim=-1)
            assert cos.min() > 0.9999


def test_view_is_made_once_per_model_and_layer_and_dies_with_the_model():
    import gc

    import s3attn.models.half as qm

    model = tiny_model("llama")
    view = half_weight_view(model, 1)
    assert half_weight_view(model, 1) is view and half_weight_view(model, 2) is not view
    assert model in qm._VIEWS
    del model, view
    gc.collect()
    assert not any(type(m).__name__ == "LlamaForCausalLM" for m in qm._VIEWS.keys())


def test_view_falls_back_where_fp16_packing_does_not_apply():
    model = tiny_model("llama").to(torch.bfloat16)
    assert not half_weights_supported(model)
    assert half_weight_view(model, 1) is model
