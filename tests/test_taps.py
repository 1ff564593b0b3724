"""The K/Q taps are the model's own pre-RoPE per-head vectors: rotating them with the model's RoPE and
recomputing softmax(q k^T) reproduces the model's eager attention weights, for every architecture."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from conftest import TINY_LAYERS, TINY_VOCAB, tiny_model

from s3attn.errors import S3Error
from s3attn.models.taps import (
    AttnGeometry,
    attention_geometry,
    check_layers,
    decoder_layers,
    forward_to_layer,
    prefix_cache,
    tap_heads,
)
from s3attn.retrieval.question import _fork

SEQ = 12  # longer than the tiny sliding window (4), so window masks matter


def _ids(batch: int = 2, seq: int = SEQ, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, TINY_VOCAB, (batch, seq), generator=gen)


def _rope(model, layer: int, q_BTHD: torch.Tensor, k_BTHD: torch.Tensor):
    """Rotate with the model's own rotary module and its architecture's apply_rotary_pos_emb."""
    modeling = sys.modules[type(model).__module__]
    base = model.model
    attn = base.layers[layer].self_attn
    position_ids = torch.arange(q_BTHD.shape[1]).unsqueeze(0)
    q, k = q_BTHD.transpose(1, 2), k_BTHD.transpose(1, 2)  # -> [B, H, T, D]
    layer_type = getattr(attn, "layer_type", None)
    if isinstance(
        getattr(base.rotary_emb, "rope_type", None), dict
    ):  # Gemma3: local/global RoPE per layer type
        cos, sin = base.rotary_emb(q, position_ids, layer_type)
    else:
        cos, sin = base.rotary_emb(q, position_ids)
    return modeling.apply_rotary_pos_emb(q, k, cos, sin)


def _window(model, layer: int) -> int | None:
    attn = model.model.layers[layer].self_attn
    if hasattr(attn, "sliding_window"):  # Qwen2, Gemma3: per layer (None on full layers)
        return attn.sliding_window
    return getattr(model.config, "sliding_window", None)  # Mistral: every layer; Llama: none


def _recompute(model, layer, q_BHTD, k_BHTD, *, window: int | None) -> torch.Tensor:
    attn = model.model.layers[layer].self_attn
    geo = attention_geometry(model)
    k_rep = k_BHTD[:, list(geo.kv_head_of_query)]
    scores = q_BHTD @ k_rep.transpose(-1, -2) * attn.scaling
    seq = q_BHTD.shape[2]
    i = torch.arange(seq)[:, None]
    j = torch.arange(seq)[None, :]
    allowed = j <= i
    if window is not None:
        allowed &= j > i - window
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1)


def test_taps_reproduce_eager_attention(arch, tiny_lm):
    model = tiny_lm
    assert getattr(model.config, "attn_logit_softcapping", None) is None
    ids = _ids()
    layers = [1, 2, TINY_LAYERS - 1]
    taps = tap_heads(model, ids, layers)
    with torch.no_grad():
        ref = model(input_ids=ids, output_attentions=True, use_cache=False).attentions
    windows = set()
    for layer in layers:
        q, k = _rope(model, layer, taps.queries[layer], taps.keys[layer])
        window = _window(model, layer)
        windows.add(window)
        ours = _recompute(model, layer, q, k, window=window)
        assert ours.shape == ref[layer].shape == (2, 4, SEQ, SEQ)
        torch.testing.assert_close(ours, ref[layer], atol=1e-5, rtol=1e-4)
        # The check has teeth: unrotated (pre-RoPE) vectors, or a wrong mask, do not match.
        raw = _recompute(
            model, layer, taps.queries[layer].transpose(1, 2), taps.keys[layer].transpose(1, 2), window=window
        )
        assert (raw - ref[layer]).abs().max() > 1e-2
        if window is not None:
            assert (_recompute(model, layer, q, k, window=None) - ref[layer]).abs().max() > 1e-2
    expected = {"llama": {None}, "mistral": {4}, "qwen2": {None, 4}, "gemma3": {None, 4}}[arch]
    assert windows == expected


def test_taps_shapes_dtype_and_no_grad(tiny_lm):
    taps = tap_heads(tiny_lm, _ids(batch=3, seq=7), [0, 2])
    assert sorted(taps.keys) == sorted(taps.queries) == [0, 2]
    for layer in (0, 2):
        assert taps.keys[layer].shape == (3, 7, 2, 16)
        assert taps.queries[layer].shape == (3, 7, 4, 16)
        for t in (taps.keys[layer], taps.queries[layer]):
            assert t.dtype == torch.float32 and t.is_contiguous() and not t.requires_grad
    assert not torch.equal(taps.keys[0], taps.keys[2])


@pytest.mark.parametrize("seq", [2, 4])  # T equal to the KV / query head count: shapes alone are ambiguous
def test_short_prefix_matches_long_run(tiny_lm, seq):
    ids = _ids()
    long = tap_heads(tiny_lm, ids, range(TINY_LAYERS))
    short = tap_heads(tiny_lm, ids[:, :seq], range(TINY_LAYERS))
    for layer in range(TINY_LAYERS):  # causal model: a prefix sees the same vectors
        torch.testing.assert_close(short.keys[layer], long.keys[layer][:, :seq], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(short.queries[layer], long.queries[layer][:, :seq], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("split", [3, 9])
def test_prefix_cache_continues_the_sequence(tiny_lm, split):
    """Tapping the tail after a cached prefix gives the vectors of one forward over the whole sequence."""
    ids = _ids()[:1]
    whole = tap_heads(tiny_lm, ids, [1, 3])
    cache = prefix_cache(tiny_lm, ids[:, :split])
    for fork in (_fork, _fork, copy.deepcopy):  # a fork per use leaves the prefix cache reusable
        tail = tap_heads(tiny_lm, ids[:, split:], [1, 3], cache=fork(cache))
        for layer in (1, 3):
            torch.testing.assert_close(
                tail.queries[layer], whole.queries[layer][:, split:], atol=1e-5, rtol=1e-5
            )
            torch.testing.assert_close(tail.keys[layer], whole.keys[layer][:, split:], atol=1e-5, rtol=1e-5)
    without = tap_heads(tiny_lm, ids[:, split:], [3])  # the prefix matters: without it the vectors differ
    assert not torch.allclose(without.queries[3], whole.queries[3][:, split:], atol=1e-3)


def test_keys_only(tiny_lm):
    ids = _ids()
    both = tap_heads(tiny_lm, ids, [1, 3])
    keys = tap_heads(tiny_lm, ids, [3, 1, 1], sites=("k",))
    assert keys.queries == {}
    assert sorted(keys.keys) == [1, 3]
    for layer in (1, 3):
        torch.testing.assert_close(keys.keys[layer], both.keys[layer], atol=0, rtol=0)


def _fire_counter(modules):
    fired = {name: 0 for name in modules}
    handles = []
    for name, module in modules.items():

        def hook(_m, _a, _o, name=name):
            fired[name] += 1

        handles.append(module.register_forward_hook(hook))
    return fired, handles


@pytest.mark.parametrize("sites", [("k", "q"), ("k",), ("q",)])
@pytest.mark.parametrize("runner", ["tap", "baseline"])
def test_forward_stops_after_deepest_tap(tiny_lm, sites, runner):
    layers = decoder_layers(tiny_lm)
    deepest = 1
    watched = {
        "attn_out": layers[deepest].self_attn.o_proj,
        "next_layer": layers[deepest + 1],
        "final_norm": tiny_lm.model.norm,
        "lm_head": tiny_lm.lm_head,
        "tapped_layer": layers[deepest],
        "first_layer": layers[0],
    }
    fired, handles = _fire_counter(watched)
    try:
        if runner == "tap":
            taps = tap_heads(tiny_lm, _ids(), [0, deepest], sites=sites)
            assert sorted(taps.keys if "k" in sites else taps.queries) == [0, deepest]
        else:
            assert forward_to_layer(tiny_lm, _ids(), deepest, sites=sites) is None
    finally:
        for h in handles:
            h.remove()
    assert fired == {
        "attn_out": 0,
        "next_layer": 0,
        "final_norm": 0,
        "lm_head": 0,
        "tapped_layer": 0,
        "first_layer": 1,
    }
    assert all(not m._forward_hooks for m in tiny_lm.modules()), "tap hooks were left behind"


def test_last_layer_never_reaches_final_norm(tiny_lm):
    fired, handles = _fire_counter({"final_norm": tiny_lm.model.norm})
    try:
        tap_heads(tiny_lm, _ids(), [TINY_LAYERS - 1])
        forward_to_layer(tiny_lm, _ids(), TINY_LAYERS - 1)
    finally:
        handles[0].remove()
    assert fired["final_norm"] == 0


def test_hooks_removed_on_error(tiny_lm):
    bad_ids = torch.full((1, 5), TINY_VOCAB + 10)  # out of vocabulary: the embedding raises
    with pytest.raises(IndexError):
        tap_heads(tiny_lm, bad_ids, [2])
    assert all(not m._forward_hooks for m in tiny_lm.modules())
    assert tap_heads(tiny_lm, _ids(), [2]).keys[2].shape == (2, SEQ, 2, 16)


def test_attention_mask_and_position_ids_pass_through(tiny_lm):
    ids = _ids(batch=1)
    plain = tap_heads(tiny_lm, ids, [2])
    shifted = tap_heads(tiny_lm, ids, [2], position_ids=torch.arange(SEQ).unsqueeze(0) * 3)
    masked = tap_heads(tiny_lm, ids, [2], attention_mask=torch.ones_like(ids))
    torch.testing.assert_close(masked.keys[2], plain.keys[2], atol=1e-6, rtol=1e-6)
    assert (shifted.keys[2] - plain.keys[2]).abs().max() > 1e-3  # RoPE is relative: stretch, not shift
    padded = torch.ones_like(ids)
    padded[0, :3] = 0
    left = tap_heads(tiny_lm, ids, [2], attention_mask=padded)
    assert (left.keys[2][:, 3:] - plain.keys[2][:, 3:]).abs().max() > 1e-3


def test_geometry():
    geo = attention_geometry(tiny_model("gemma3"))
    assert geo == AttnGeometry(
        num_layers=4, num_heads=4, num_kv_heads=2, head_dim=16, kv_head_of_query=(0, 0, 1, 1)
    )
    assert isinstance(geo.kv_head_of_query, tuple)


def test_check_layers():
    model = tiny_model("llama")
    assert check_layers(model, [3, 1, 1, 0]) == [0, 1, 3]
    assert check_layers(model, 2) == [2]
    with pytest.raises(S3Error, match=r"^layer 4 is beyond the model's depth \(4 layers: 0-3\)$"):
        check_layers(model, [1, 4])
    with pytest.raises(S3Error, match="layer -1"):
        check_layers(model, [-1])
    with pytest.raises(S3Error, match="no layers"):
        check_layers(model, [])
    with pytest.raises(S3Error, match="beyond"):
        tap_heads(model, _ids(), [40])
    with pytest.raises(S3Error, match="sites"):
        tap_heads(model, _ids(), [1], sites=("v",))
    with pytest.raises(S3Error, match="beyond"):
        forward_to_layer(model, _ids(), 4)


@pytest.mark.slow
def test_smollm2_taps_reproduce_eager_attention(smollm2):
    from s3attn.models.loading import load_model

    eager = load_model(attn_implementation="eager").model  # from the cache the fixture made
    ids = smollm2.tokenizer(
        "The capital of France is Paris, on the river Seine.", return_tensors="pt"
    ).input_ids
    layers = [0, 15, 29]
    taps = tap_heads(smollm2.model, ids, layers)  # the sdpa model gives the same vectors
    with torch.no_grad():
        ref = eager(input_ids=ids, output_attentions=True, use_cache=False).attentions
    for layer in layers:
        assert taps.keys[layer].shape == (1, ids.shape[1], 3, 64)
        q, k = _rope(eager, layer, taps.queries[layer], taps.keys[layer])
        ours = _recompute(eager, layer, q, k, window=None)
        torch.testing.assert_close(ours, ref[layer], atol=1e-5, rtol=1e-4)
