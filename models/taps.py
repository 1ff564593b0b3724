"""K/Q taps: per-head attention key and query vectors, before RoPE, at chosen decoder layers.

Works over the module tree of Llama, Qwen2, Mistral, Gemma3 (text) and alike: decoder layers are
``model.model.layers`` (or ``model.layers`` for a bare base model), each with a ``self_attn`` module.

- With ``q_norm``/``k_norm`` modules (Gemma3, Qwen3) the tap is the output of those norms: the vectors that
  RoPE is applied to next.
- Otherwise it is the output of ``q_proj``/``k_proj`` (bias included), split into heads.

The forward pass stops as soon as the last requested tap of the deepest layer is captured: a hook raises a
private exception that ``tap_heads`` catches, so no layer past it is computed. Hooks are always removed.
transformers is never imported here.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from s3attn.constants import SITE_KEY, SITE_QUERY, SITES
from s3attn.errors import S3Error


class AttnGeometry(NamedTuple):
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    kv_head_of_query: tuple[int, ...]  # GQA map: query head h -> KV head h // (num_heads // num_kv_heads)


class Taps(NamedTuple):
    keys: dict[int, torch.Tensor]  # layer -> keys_BTHD [B, T, H_kv, D]
    queries: dict[int, torch.Tensor]  # layer -> queries_BTHD [B, T, H_q, D]


class _StopForward(Exception):
    """Raised from a hook once every requested tap is captured; never leaves this module."""


# Per model: site -> "bthd" | "bhtd" | "flat", the layout of what the hooked q/k norm returns. Learnt from a
# short probe forward, only needed when a sequence length equals a head count (shapes are then ambiguous).
_NORM_LAYOUTS: weakref.WeakKeyDictionary[nn.Module, dict[str, str]] = weakref.WeakKeyDictionary()


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layer list of a causal LM (``model.model.layers``) or of a base model (``model.layers``)."""
    inner = getattr(model, "model", None)
    for holder in (inner, model):
        layers = getattr(holder, "layers", None)
        if isinstance(layers, nn.ModuleList) and len(layers) and hasattr(layers[0], "self_attn"):
            return layers
    raise S3Error(
        f"model {type(model).__name__}: no decoder layers with self_attn at model.model.layers or model.layers; "
        "use a Llama, Qwen2, Mistral or Gemma3 text model"
    )


def _text_config(model: nn.Module) -> Any:
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def attention_geometry(model: nn.Module) -> AttnGeometry:
    """Layer count, query/KV head counts, head size and the GQA map of a model."""
    layers = decoder_layers(model)
    cfg = _text_config(model)
    num_heads = int(cfg.num_attention_heads)
    num_kv = int(getattr(cfg, "num_key_value_heads", None) or num_heads)
    head_dim = getattr(layers[0].self_attn, "head_dim", None) or getattr(cfg, "head_dim", None)
    head_dim = int(head_dim or cfg.hidden_size // num_heads)
    if num_heads % num_kv:
        raise S3Error(
            f"model {type(model).__name__}: {num_heads} query heads do not split over {num_kv} KV heads"
        )
    group = num_heads // num_kv
    return AttnGeometry(
        num_layers=len(layers),
        num_heads=num_heads,
        num_kv_heads=num_kv,
        head_dim=head_dim,
        kv_head_of_query=tuple(h // group for h in range(num_heads)),
    )


def check_layers(model: nn.Module, layers: Iterable[int] | int) -> list[int]:
    """Sorted unique layer indices, each checked against the model's depth."""
    depth = len(decoder_layers(model))
    items = [layers] if isinstance(layers, int) else list(layers)
    if not items:
        raise S3Error("no layers given: name at least one decoder layer to tap")
    out = set()
    for layer in items:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise S3Error(f"layer {layer!r} is not a whole number ({depth} layers: 0-{depth - 1})")
        if layer < 0:
            raise S3Error(f"layer {layer} is negative; layers count from 0 ({depth} layers: 0-{depth - 1})")
        if layer >= depth:
            raise S3Error(f"layer {layer} is beyond the model's depth ({depth} layers: 0-{depth - 1})")
        out.add(layer)
    return sorted(out)


def _check_sites(sites: Sequence[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(sites))
    if not chosen or any(s not in SITES for s in chosen):
        raise S3Error(f"sites {tuple(sites)!r}: choose one or both of {SITES!r}")
    return chosen


def _site_module(attn: nn.Module, site: str) -> tuple[nn.Module, bool]:
    """The module whose output is the pre-RoPE vector of ``site``, and whether it is a per-head norm."""
    norm = getattr(attn, f"{site}_norm", None)
    if isinstance(norm, nn.Module):
        return norm, True
    proj = getattr(attn, f"{site}_proj", None)
    if isinstance(proj, nn.Module):
        return proj, False
    raise S3Error(
        f"attention module {type(attn).__name__} has neither {site}_norm nor {site}_proj; "
        "fused QKV projections are not supported"
    )


def _layout(shape: torch.Size, batch: int, seq: int, heads: int, dim: int) -> str | None:
    """Layout of a tapped tensor from its shape; None when ambiguous (seq == heads)."""
    if len(shape) == 3 and tuple(shape) == (batch, seq, heads * dim):
        return "flat"
    if len(shape) == 4:
        bthd = tuple(shape) == (batch, seq, heads, dim)
        bhtd = tuple(shape) == (batch, heads, seq, dim)
        if bthd and bhtd:
            return None
        if bthd:
            return "bthd"
        if bhtd:
            return "bhtd"
    raise RuntimeError(
        f"tapped tensor of shape {tuple(shape)} does not fit B={batch} T={seq} H={heads} D={dim}"
    )


def _to_bthd(x: torch.Tensor, layout: str, batch: int, seq: int, heads: int, dim: int) -> torch.Tensor:
    """A [B, T, H, D] view of a tapped tensor (not necessarily contiguous)."""
    if layout == "flat":
        x = x.reshape(batch, seq, heads, dim)
    elif layout == "bhtd":
        x = x.transpose(1, 2)
    return x


def _run_until(
    model: nn.Module,
    input_ids: torch.Tensor,
    targets: dict[tuple[int, str], nn.Module],
    on_output: Any,
    *,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    cache: Any = None,
) -> None:
    """Forward with a hook on each target module; stop once every target has fired. Hooks always removed.

    ``cache`` (a KV cache of earlier tokens, see :func:`prefix_cache`) is extended in place."""
    pending = set(targets)
    handles = []

    def make_hook(key: tuple[int, str]):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if key not in pending:
                return
            if on_output is not None:
                on_output(key, output)
            pending.discard(key)
            if not pending:
                raise _StopForward

        return hook

    kwargs = _forward_kwargs(model, attention_mask, position_ids, cache)
    try:
        for key, module in targets.items():
            handles.append(module.register_forward_hook(make_hook(key)))
        with torch.no_grad():
            model(input_ids=input_ids, **kwargs)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    if pending:
        missing = ", ".join(f"layer {layer} {site}" for layer, site in sorted(pending))
        raise RuntimeError(f"the forward pass finished without reaching the taps: {missing}")


def _forward_kwargs(
    model: nn.Module, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None, cache: Any
) -> dict[str, Any]:
    """The model's forward keyword arguments besides ``input_ids``: the cache (if any) and the given ones."""
    kwargs: dict[str, Any] = {"use_cache": cache is not None}
    if cache is not None:
        kwargs[_cache_kwarg(model)] = cache
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    return kwargs


def _cache_kwarg(model: nn.Module) -> str:
    """The forward's name for the KV cache: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def prefix_cache(model: nn.Module, input_ids: torch.Tensor) -> Any:
    """The model's KV cache after a full forward over ``input_ids`` [1, T] (a fixed prompt prefix).

    ``tap_heads(model, rest, ..., cache=copy.deepcopy(c))`` then taps ``rest`` exactly as if it followed the
    prefix in one sequence (positions continue after the prefix), computing only the new tokens.
    """
    with torch.no_grad():
        out = model(input_ids=input_ids, use_cache=True)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    if cache is None:
        raise RuntimeError(f"model {type(model).__name__} returned no KV cache")
    return cache


def _targets(model: nn.Module, layers: list[int], sites: tuple[str, ...]) -> dict[tuple[int, str], nn.Module]:
    decoder = decoder_layers(model)
    return {
        (layer, site): _site_module(decoder[layer].self_attn, site)[0] for layer in layers for site in sites
    }


def _norm_layouts(model: nn.Module, device: torch.device) -> dict[str, str]:
    """Learn (once per model) how the q/k norms lay out their output, from a probe with T != any head count."""
    known = _NORM_LAYOUTS.get(model)
    if known is not None:
        return known
    geo = attention_geometry(model)
    seq = geo.num_heads + geo.num_kv_heads + 1
    heads = {SITE_QUERY: geo.num_heads, SITE_KEY: geo.num_kv_heads}
    found: dict[str, str] = {}

    def record(key: tuple[int, str], output: torch.Tensor) -> None:
        site = key[1]
        found[site] = _layout(output.shape, 1, seq, heads[site], geo.head_dim) or "bthd"

    probe_ids = torch.zeros((1, seq), dtype=torch.long, device=device)
    _run_until(model, probe_ids, _targets(model, [0], SITES), record, attention_mask=None, position_ids=None)
    _NORM_LAYOUTS[model] = found
    return found


def tap_heads(
    model: nn.Module,
    input_ids: torch.Tensor,
    layers: Iterable[int] | int,
    *,
    sites: Sequence[str] = SITES,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    cache: Any = None,
) -> Taps:
    """Pre-RoPE per-head keys [B, T, H_kv, D] and queries [B, T, H_q, D] at ``layers`` (no grad, model dtype).

    The forward stops right after the deepest layer's last requested tap. ``sites=(SITE_KEY,)`` taps keys only
    (``queries`` is then empty). ``cache``: a KV cache of tokens before ``input_ids`` (:func:`prefix_cache`);
    it is extended in place, so pass a copy to reuse it.
    """
    chosen_layers = check_layers(model, layers)
    chosen_sites = _check_sites(sites)
    if input_ids.ndim != 2:
        raise S3Error(f"input_ids of shape {tuple(input_ids.shape)}: give a [batch, tokens] tensor")
    geo = attention_geometry(model)
    batch, seq = input_ids.shape
    heads = {SITE_QUERY: geo.num_heads, SITE_KEY: geo.num_kv_heads}
    targets = _targets(model, chosen_layers, chosen_sites)
    raw: dict[tuple[int, str], tuple[torch.Tensor, str | None]] = {}

    def record(key: tuple[int, str], output: torch.Tensor) -> None:
        site = key[1]
        layout = _layout(output.shape, batch, seq, heads[site], geo.head_dim)
        x = output.detach()
        if layout is not None:
            x = _to_bthd(x, layout, batch, seq, heads[site], geo.head_dim)
        # Copy now (contiguous), so later in-place work of the model cannot change what we keep. An ambiguous
        # shape (T equals the head count) is kept as is and laid out after the forward.
        raw[key] = (x.clone(memory_format=torch.contiguous_format), layout)

    _run_until(
        model,
        input_ids,
        targets,
        record,
        attention_mask=attention_mask,
        position_ids=position_ids,
        cache=cache,
    )

    keys: dict[int, torch.Tensor] = {}
    queries: dict[int, torch.Tensor] = {}
    for (layer, site), (x, layout) in sorted(raw.items()):
        if layout is None:
            layout = _norm_layouts(model, input_ids.device)[site]
            x = _to_bthd(x, layout, batch, seq, heads[site], geo.head_dim).contiguous()
        (keys if site == SITE_KEY else queries)[layer] = x
    return Taps(keys=keys, queries=queries)


def forward_to_layer(
    model: nn.Module,
    input_ids: torch.Tensor,
    last_layer: int,
    *,
    attention_mask: torch.Tensor | None = None,
    sites: Sequence[str] = SITES,
) -> None:
    """Run the forward exactly as far as ``tap_heads(..., layers=[..., last_layer], sites=sites)`` would,
    capturing nothing: the baseline for measuring what tapping costs."""
    (layer,) = check_layers(model, [last_layer])
    targets = _targets(model, [layer], _check_sites(sites))
    _run_until(model, input_ids, targets, None, attention_mask=attention_mask, position_ids=None)
