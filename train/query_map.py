"""Fit a query map: per (layer, query head) a linear map from the question's **query** vectors into the key
space, so the paper's site (queries matched against key postings) reads the key dictionary.

The SAEs code keys and queries with one dictionary, but a query and the keys it attends to lie in different
regions (their codes barely overlap), so raw query codes find needles at chance. The map is fitted on the
model's own attention over training text (never the evaluation essays): for the query of head ``h`` at
position ``i``, the target is the key it attends to, ``sum_j a_ij k_j`` over the positions ``j`` outside the
attention sink (the first ``sink`` tokens) and the local window (the last ``local`` tokens), with
``a_ij`` the model's attention (RoPE applied, causal softmax) renormalised over those positions
(``target="mean"``) or the single most attended of them (``"argmax"``). Each row is weighted by the
attention mass those positions hold. The fit is weighted ridge regression in closed form: per (layer, head)
the normal equations are accumulated chunk by chunk (``NormalEquations``), so memory does not grow with
the text.
"""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from einops import einsum, rearrange
from tqdm import tqdm

from s3attn.constants import QUERY_MAP_FILE
from s3attn.corpus import Corpus
from s3attn.errors import S3Error
from s3attn.models.taps import attention_geometry, tap_heads
from s3attn.saes.query_map import QueryMap

log = logging.getLogger(__name__)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def rope(model, x_THD: torch.Tensor) -> torch.Tensor:
    """``x_THD`` with the model's rotary embedding of positions 0..T-1 applied (Llama-style rotate-half)."""
    inner = getattr(model, "model", model)
    pos = torch.arange(x_THD.shape[0], device=x_THD.device)[None]
    cos, sin = inner.rotary_emb(x_THD[None].transpose(1, 2), pos)  # [1, T, D]
    cos, sin = cos[0, :, None, :].to(x_THD.dtype), sin[0, :, None, :].to(x_THD.dtype)
    return x_THD * cos + _rotate_half(x_THD) * sin


def attention_weights(
    model, q_THD: torch.Tensor, k_TGD: torch.Tensor, kv_of_query: tuple[int, ...], rows: slice = slice(None)
) -> torch.Tensor:
    """The model's causal attention [H, T', T] of the query positions ``rows`` over every position: RoPE
    applied to pre-RoPE queries [T, H, D] and keys [T, G, D] (GQA: ``kv_of_query``), softmax."""
    T, H, D = q_THD.shape
    kv = torch.tensor(kv_of_query, device=q_THD.device)
    qr, kr = rope(model, q_THD.float())[rows], rope(model, k_TGD.float()[:, kv])
    logits_HTS = einsum(qr, kr, "t h d, s h d -> h t s") / D**0.5
    i = torch.arange(T, device=q_THD.device)
    causal = i[None, :] <= i[rows][:, None]
    return logits_HTS.masked_fill(~causal, float("-inf")).softmax(-1)


def keys_attended(
    attn_HTS: torch.Tensor, k_SHD: torch.Tensor, target: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query row, from its attention ``attn_HTS`` over the keys ``k_SHD`` (each query head's own, GQA
    resolved): the most attended key (``target`` argmax) or the attention-weighted mean key (mean), [T, H, D],
    and the attention mass on those keys [T, H]."""
    mass_HT = attn_HTS.sum(-1)
    if target == "argmax":
        best_HTD = attn_HTS.argmax(-1)[..., None].expand(-1, -1, k_SHD.shape[-1])
        target_HTD = torch.gather(k_SHD.permute(1, 0, 2), 1, best_HTD)
    else:
        w_HTS = attn_HTS / mass_HT.clamp_min(1e-9)[..., None]
        target_HTD = einsum(w_HTS, k_SHD, "h t s, s h d -> h t d")
    return rearrange(target_HTD, "h t d -> t h d"), rearrange(mass_HT, "h t -> t h")


def attended_keys(
    model,
    q_THD: torch.Tensor,
    k_TGD: torch.Tensor,
    kv_of_query: tuple[int, ...],
    sink: int,
    local: int,
    target: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query row: the key it attends to outside sink and local window (``target_THD``) and the attention
    mass there (``mass_TH``); see the module docstring."""
    attn_HTS = attention_weights(model, q_THD, k_TGD, kv_of_query)
    i = torch.arange(q_THD.shape[0], device=q_THD.device)
    far = (i[None, :] >= sink) & (i[None, :] <= i[:, None] - local)
    k_THD = k_TGD.float()[:, torch.tensor(kv_of_query, device=q_THD.device)]  # each query head's keys (GQA)
    return keys_attended(attn_HTS * far, k_THD, target)


class NormalEquations:
    """Weighted ridge regression ``y ~ [x, 1] @ W`` per head, accumulated over chunks."""

    def __init__(self, heads: int, dim: int):
        self.xtx = torch.zeros(heads, dim + 1, dim + 1, dtype=torch.float64)
        self.xty = torch.zeros(heads, dim + 1, dim, dtype=torch.float64)
        self.rows = 0

    def add(self, x_NHD: torch.Tensor, y_NHD: torch.Tensor, w_NH: torch.Tensor) -> None:
        x1 = torch.cat([x_NHD, torch.ones_like(x_NHD[..., :1])], -1).double()
        wx = x1 * w_NH.double()[..., None]
        self.xtx += einsum(wx, x1, "n h a, n h b -> h a b")
        self.xty += einsum(wx, y_NHD.double(), "n h a, n h d -> h a d")
        self.rows += x_NHD.shape[0]

    def solve(self, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight_HDD acting as ``x @ W``, bias_HD)."""
        dim = self.xtx.shape[-1]
        scale = self.xtx.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None]
        eye = torch.eye(dim, dtype=torch.float64) * ridge * scale
        eye[:, -1, -1] = 0.0  # the bias is not shrunk
        w = torch.linalg.solve(self.xtx + eye, self.xty)
        return w[:, :-1].float(), w[:, -1].float()


@torch.no_grad()
def attention_rows(
    model, contexts: Iterable[torch.Tensor], layers: list[int], *, sink: int, local: int, target: str
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per context and layer: (layer, query rows [T', H, D], the key each attends to [T', H, D], attention
    mass there [T', H]) on the CPU, the first ``sink + local`` tokens (which have no such key) left out."""
    geo = attention_geometry(model)
    for ids in contexts:
        taps = tap_heads(model, ids[None].to(model.device), layers)
        for layer in layers:
            q_THD, k_TGD = taps.queries[layer][0], taps.keys[layer][0]
            y_THD, mass_TH = attended_keys(model, q_THD, k_TGD, geo.kv_head_of_query, sink, local, target)
            keep = slice(sink + local, None)
            yield layer, q_THD[keep].float().cpu(), y_THD[keep].cpu(), mass_TH[keep].cpu()


@torch.no_grad()
def fit_query_map(
    model,
    contexts: Iterable[torch.Tensor],
    layers: list[int],
    *,
    sink: int = 4,
    local: int = 16,
    target: str = "mean",
    ridge: float = 1e-3,
    total: int | None = None,
) -> QueryMap:
    """A ``QueryMap`` for ``layers`` fitted on ``contexts`` (token id tensors [T]), see the module docstring."""
    geo = attention_geometry(model)
    eqs = {layer: NormalEquations(geo.num_heads, geo.head_dim) for layer in layers}
    shown = tqdm(contexts, total=total, desc="query map", unit="ctx")
    for layer, q_THD, y_THD, mass_TH in attention_rows(
        model, shown, layers, sink=sink, local=local, target=target
    ):
        eqs[layer].add(q_THD, y_THD, mass_TH)
    maps = {layer: eq.solve(ridge) for layer, eq in eqs.items()}
    log.info("query map fitted on %d rows per layer", next(iter(eqs.values())).rows)
    meta = {"sink": sink, "local": local, "target": target, "ridge": ridge, "rows": eqs[layers[0]].rows}
    return QueryMap(
        {layer: w for layer, (w, _) in maps.items()}, {layer: b for layer, (_, b) in maps.items()}, meta
    )


def sample_contexts(corpus: Corpus, tokenizer, count: int, length: int, seed: int = 0) -> list[torch.Tensor]:
    """``count`` contexts of ``length`` tokens spread over the whole corpus: every document is cut into
    contexts, every ``stride``-th is a candidate, and ``count`` are drawn (seeded)."""
    cands: list[torch.Tensor] = []
    stride = 7  # neighbouring contexts of one text are alike: take every 7th
    for doc in corpus:
        ids = [t for block in doc.token_blocks(tokenizer) for t in block]
        cands += [torch.tensor(ids[s : s + length]) for s in range(0, len(ids) - length + 1, length * stride)]
    if len(cands) < count:
        raise S3Error(f"--contexts {count}: the corpus gives only {len(cands)} contexts of {length} tokens")
    random.Random(seed).shuffle(cands)
    return cands[:count]


def query_map_main(argv: Sequence[str], prog: str) -> int:
    """``s3-train-sae query-map RELEASE``: fit a query map for a release's layers (see the module docstring)."""
    import argparse

    from s3attn.models.precision import resolve_dtype
    from s3attn.saes.stack import load_stack, resolve_release

    ap = argparse.ArgumentParser(prog=f"{prog} query-map", description=__doc__.split("\n\n")[0])
    ap.add_argument("release", help="the SAE release folder (its layers and model)")
    ap.add_argument("--model", default=None, help="local model folder (default: the release's model)")
    ap.add_argument("--corpus", default="corpora/public-domain", help="training text (never evaluation text)")
    ap.add_argument("--contexts", type=int, default=40, help="contexts to fit on")
    ap.add_argument("--context-length", type=int, default=512, help="tokens per context")
    ap.add_argument(
        "--target", choices=("mean", "argmax"), default="mean", help="the attended key: see above"
    )
    ap.add_argument("--sink", type=int, default=4, help="first tokens left out (attention sink)")
    ap.add_argument(
        "--local", type=int, default=16, help="last tokens before a query left out (local window)"
    )
    ap.add_argument("--ridge", type=float, default=1e-3, help="ridge, relative to the mean input power")
    ap.add_argument("--out", default=None, help=f"file to write (default RELEASE/{QUERY_MAP_FILE})")
    args = ap.parse_args(list(argv))
    rel = resolve_release(args.release, None)
    stack = load_stack(rel.path, rel.config, rel.layers, args.model, dtype=resolve_dtype("auto", "cpu"))
    corpus = Corpus(args.corpus, option="--corpus")
    ctxs = sample_contexts(corpus, stack.loaded.tokenizer, args.contexts, args.context_length)
    qm = fit_query_map(
        stack.loaded.model, ctxs, rel.layers, sink=args.sink, local=args.local, target=args.target,
        ridge=args.ridge, total=len(ctxs),
    )  # fmt: skip
    out = Path(args.out) if args.out else rel.path / QUERY_MAP_FILE
    qm._replace(fit={**qm.fit, "corpus": str(args.corpus), "contexts": args.contexts}).save(out)
    print(f"{prog}: wrote query map {out} ({qm.fit['rows']} rows per layer)", file=sys.stderr)
    return 0
