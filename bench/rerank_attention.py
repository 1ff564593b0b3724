"""A try for the fusion (issue 14, target 4): let the model's own attention choose among both retrievers' finds.

Per tuning question, BM25's and S3's candidates are each taken at the full budget (``tune_adaptive.gather``);
their union (up to twice the budget) is laid in document order into the answering prompt, and the model reads
it with the question after it. The attention of the question's tokens (the prompt after the context, RoPE
applied, mean over query heads) on each context token is kept per layer: averaged over every prompt token
after the context (``after``: the instruction, the question, the chat turn), or of the last prompt token
only (``last``: the one that predicts the answer's first token). Replayed
offline: every candidate span is scored by that attention over a group of layers (``mean`` / ``max`` /
``sum`` / mean of the ``top8`` tokens of the span), the bias spans go first and the best-scored candidates
fill the budget (``rerank``); or the attention only decides the shares of the adaptive interleave: BM25 gets
0.9 (0.7) of the budget when its best passage holds the most attended token, else 0.1 (0.3) (``share``). Printed: evidence recall per family for S3, BM25, the adaptive default and each rerank, with
the worst family margin ``hybrid - max(s3, bm25)`` (the issue asks for -0.03 at worst). Tuning seeds only.

    python bench/rerank_attention.py --tasks literal_niah,paraphrase_niah,paraphrase_multikey --samples 10 \\
        --seeds 0,1,2 --cache runs/tune/rerank-niah.pkl
    python bench/rerank_attention.py --tasks drop_qa --samples 8 --seeds 0,1 --cache runs/tune/rerank-drop.pkl
    python bench/rerank_attention.py --replay runs/tune/rerank-niah.pkl,runs/tune/rerank-drop.pkl
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from einops import einsum
from tune_adaptive import bm25_feed, compared, family_means, gather_parser, questions_of

from s3attn.models.taps import attention_geometry, tap_heads
from s3attn.retrieval.adaptive import shared_spans
from s3attn.retrieval.fusion import normalised
from s3attn.retrieval.generate import chat_prompt
from s3attn.retrieval.spans import fuse
from s3attn.train.query_map import rope

MARK = "<<<CONTEXT>>>"
PROFILES = ("after", "last")  # attention of every prompt token after the context / of the last one only
LAYER_GROUPS = {"all": (0, None), "0-9": (0, 10), "10-19": (10, 20), "20-29": (20, 30), "5-24": (5, 25)}
AGGREGATES = {
    "mean": np.mean,
    "max": np.max,
    "sum": np.sum,
    "top8": lambda v: np.sort(v)[-8:].mean(),
}


def candidates(q: dict, budget: int) -> list:
    """BM25's and S3's own feeds at the full budget, each span a candidate."""
    return bm25_feed(q, budget) + normalised(q["s3"])


def prompt_ids(r, units: list[tuple[int, int]], question: str) -> tuple[list[int], np.ndarray, int, int]:
    """Token ids of the answering prompt around ``units`` (index ranges, document order, blank lines
    between), the index position of each context token (-1 for separators) and the context's bounds."""
    tok = r.tokenizer
    pre, post = chat_prompt(tok, MARK, question).split(MARK)
    sep = tok("\n\n", add_special_tokens=False)["input_ids"]
    ids, pos = tok(pre, add_special_tokens=False)["input_ids"], []
    lo = len(ids)
    for i, (a, b) in enumerate(units):
        if i:
            ids, pos = ids + sep, pos + [-1] * len(sep)
        ids += r.store.tokens(a, b).tolist()
        pos += list(range(a, b))
    hi = len(ids)
    return ids + tok(post, add_special_tokens=False)["input_ids"], np.array(pos), lo, hi


@torch.no_grad()
def attention_profile(r, sample, row: dict, budget: int) -> dict:
    """The question tokens' attention on each context token, per layer (``prof`` [layers, context])."""
    units = [(s.start, s.end) for s in fuse([candidates(row, budget)], 10**9)]
    ids, pos, lo, hi = prompt_ids(r, units, sample.question)
    geo = attention_geometry(r.model)
    layers = list(range(geo.num_layers))
    taps = tap_heads(r.model, torch.tensor(ids, device=r.model.device)[None], layers)
    kv = torch.tensor(geo.kv_head_of_query)
    n_q = len(ids) - hi
    later = torch.ones(n_q, n_q, dtype=torch.bool).triu(1)  # causal among the question's own tokens
    prof = {name: np.zeros((len(layers), hi - lo), np.float32) for name in PROFILES}
    heads = np.zeros((len(layers), geo.num_heads, hi - lo), np.float16)  # per query head, "after"
    for layer in layers:
        q, k = taps.queries[layer][0].float().cpu(), taps.keys[layer][0].float().cpu()
        qr, kr = rope(r.model, q[hi:]), rope(r.model, k[:, kv])
        logits = einsum(qr, kr, "t h d, s h d -> h t s") / geo.head_dim**0.5
        logits[:, :, hi:] = logits[:, :, hi:].masked_fill(later, float("-inf"))
        attn = logits.softmax(-1)[:, :, lo:hi]
        prof["after"][layer] = attn.mean((0, 1)).numpy()
        prof["last"][layer] = attn[:, -1].mean(0).numpy()
        heads[layer] = attn.mean(1).numpy().astype(np.float16)
    return {"prof": prof, "heads": heads, "pos": pos}


def reranked(q: dict, budget: int, prof: np.ndarray, aggregate) -> list:
    """Bias spans first, then the candidates by the model's attention on them (``prof``: one value per
    context token), within ``budget``."""
    scored = []
    for s in candidates(q, budget):
        v = prof[(q["pos"] >= s.start) & (q["pos"] < s.end)]
        if v.size:
            scored.append(s._replace(score=float(aggregate(v))))
    return fuse([q["bias"], scored], budget)


def attention_share(q: dict, budget: int, prof: np.ndarray, shares: tuple[float, float]) -> list:
    """The model's attention as the fusion's signal: BM25 gets ``shares[0]`` of the budget when its best
    candidate holds the most attended token, else ``shares[1]``; the adaptive interleave does the rest."""

    def best(spans: list) -> float:
        vals = [prof[(q["pos"] >= s.start) & (q["pos"] < s.end)] for s in spans]
        return max((float(v.max()) for v in vals if v.size), default=0.0)

    share = shares[0] if best(bm25_feed(q, budget)) >= best(normalised(q["s3"])) else shares[1]
    return shared_spans(q["bias"], q["bm25"], q["s3"], budget, share)


def replay(questions: list[dict], budget: int) -> None:
    line = compared(questions, budget, 28)
    for profile in PROFILES:
        for group, (a, b) in LAYER_GROUPS.items():
            tries(
                questions,
                budget,
                f"{profile} {group}",
                lambda q, p=profile, a=a, b=b: q["prof"][p][a:b].mean(0),
                line,
            )
    lexical = [q for q in questions if q["task"] == "literal_niah"]
    share, chance = evidence_share(lexical)
    print(f"evidence share of attention per layer, best query head (chance {chance:.4f}, literal needles):")
    print("  " + " ".join(f"{layer}:{v:.3f}" for layer, v in enumerate(share.max(1))))
    for n in (4, 16):
        chosen = retrieval_heads(lexical, n)
        print(f"retrieval heads (chosen on the {len(lexical)} literal needles): {chosen}")
        tries(
            questions, budget, f"{n} heads", lambda q, c=chosen: np.mean([q["heads"][h] for h in c], 0), line
        )


def tries(questions: list[dict], budget: int, name: str, prof_of, line) -> None:
    """Every rerank aggregate and both share pairs with the profile ``prof_of(q)``."""
    for agg, fn in AGGREGATES.items():
        line(
            f"rerank {name} {agg}",
            family_means(questions, lambda q, f=fn: reranked(q, budget, prof_of(q), f)),
        )
    for shares in ((0.9, 0.1), (0.7, 0.3)):
        h = family_means(questions, lambda q, s=shares: attention_share(q, budget, prof_of(q), s))
        line(f"share {name} {shares[0]}/{shares[1]}", h)


def evidence_share(questions: list[dict]) -> tuple[np.ndarray, float]:
    """Per (layer, query head): the share of its attention on the context that lands on the evidence tokens,
    averaged over ``questions`` (a retrieval score like that of retrieval-head studies); and chance, the
    evidence tokens' share of the context."""
    share, chance = 0.0, 0.0
    for q in questions:
        on = np.zeros(q["pos"].size, bool)
        for a, b in q["evidence"]:
            on |= (q["pos"] >= a) & (q["pos"] < b)
        heads = q["heads"].astype(np.float32)
        share = share + heads[..., on].sum(-1) / np.maximum(heads.sum(-1), 1e-12)
        chance += on.mean()
    return np.asarray(share) / len(questions), chance / len(questions)


def retrieval_heads(questions: list[dict], n: int) -> list[tuple[int, int]]:
    """The ``n`` (layer, query head) pairs with the largest :func:`evidence_share`."""
    share, _ = evidence_share(questions)
    order = np.argsort(-share.ravel(), kind="stable")[:n]
    return [tuple(int(x) for x in np.unravel_index(i, share.shape)) for i in order]


def main(argv: list[str] | None = None) -> int:
    args = gather_parser(__doc__).parse_args(argv)
    questions = questions_of(args, lambda r, sample, row: attention_profile(r, sample, row, args.budget))
    replay(questions, args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
