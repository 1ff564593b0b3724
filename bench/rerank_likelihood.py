"""A try for the fusion (issue 14, target 4): rank both retrievers' finds by how likely the model finds the
question after each one (query likelihood, as UPR does: Sachan et al., 2022, "Improving Passage Retrieval with
Zero-Shot Question Generation").

Per tuning question, BM25's and S3's candidates are each taken at the full budget (``tune_adaptive.gather``).
Each candidate span is read alone by the model in ``retrieval.likelihood.PROMPT``, and the mean
log-probability of the question's tokens after it is kept (``lik``; ``question_logprobs``, the fusion's own
code). The model is the one the index was built with. Replayed offline:

* ``rerank``: the bias spans first, then every candidate by its likelihood, best first, within the budget;
* ``rerank, no bias``: the same without the bias spans;
* ``rerank, s3 pool Nx`` (questions gathered with ``--s3-pool``): the same, with S3's candidates taken at N
  times the budget (BM25's feed as before), so the likelihood can bring in a find S3 ranked below the budget;
* ``share``: the likelihood only picks the adaptive interleave's BM25 share: ``hi`` when BM25's best
  candidate is more likely than S3's, else ``lo``.

Printed: evidence recall per family for S3, BM25, the adaptive default and each try, with the worst family
margin ``hybrid - max(s3, bm25)`` (the issue asks for -0.03 at worst), pooled over the lengths gathered and
per length. Tuning seeds only.

    python bench/rerank_likelihood.py --tasks literal_niah,paraphrase_niah,paraphrase_multikey --samples 10 \\
        --seeds 0,1,2 --cache runs/tune/lik-niah.pkl
    python bench/rerank_likelihood.py --tasks drop_qa --samples 8 --seeds 0,1 --cache runs/tune/lik-drop.pkl
    python bench/rerank_likelihood.py --replay runs/tune/lik-niah.pkl,runs/tune/lik-drop.pkl
"""

from __future__ import annotations

import sys

import numpy as np
from tune_adaptive import bm25_feed, compared, family_means, gather_parser, questions_of

from s3attn.retrieval.adaptive import shared_spans
from s3attn.retrieval.fusion import normalised
from s3attn.retrieval.likelihood import question_logprobs
from s3attn.retrieval.spans import fuse

POOLS = (1.5, 2.0, 3.0)  # S3 pools replayed when the questions were gathered with --s3-pool


def candidates(q: dict, budget: int) -> list:
    """BM25's feed at the full budget and S3's candidates (its feed, or its ``s3_pool`` when gathered with
    ``--s3-pool``), each span a candidate."""
    return bm25_feed(q, budget) + normalised(q.get("s3_pool", q["s3"]))


def pooled(q: dict, budget: int, pool: float) -> list:
    """The candidates of a fusion that takes S3's spans at ``pool`` times the budget: BM25's feed, then S3's
    best spans (by its own score) that fit in ``pool * budget`` tokens, each with its likelihood as the score.
    Exact for the pool gathered; for a smaller one, close to what S3 would pick at that budget (S3 trims the
    span at the budget's edge, this drops it)."""
    cands = candidates(q, budget)
    scored = [c._replace(score=v) for c, v in zip(cands, q["lik"])]
    n_bm25 = len(cands) - len(q.get("s3_pool", q["s3"]))  # BM25's feed first, then S3's spans
    s3, room = [], int(pool * budget)
    for _own, c in sorted(zip(cands[n_bm25:], scored[n_bm25:]), key=lambda p: -p[0].score):  # by S3's score
        if c.end - c.start <= room:
            s3.append(c)
            room -= c.end - c.start
    return scored[:n_bm25] + s3


def question_likelihoods(r, sample, row: dict, budget: int) -> dict:
    """The question's mean log-probability after each candidate (``lik``, candidates' order), as the
    ``likelihood`` fusion computes it (``retrieval.likelihood.question_logprobs``)."""
    passages = [r.store.tokens(s.start, s.end).tolist() for s in candidates(row, budget)]
    return {"lik": question_logprobs(r.model, r.tokenizer, passages, sample.question)}


def reranked(q: dict, budget: int, bias: bool, pool: float = 1.0) -> list:
    return fuse([q["bias"] if bias else [], pooled(q, budget, pool)], budget)


def lik_share(q: dict, budget: int, hi: float, lo: float) -> list:
    n_bm25 = len(bm25_feed(q, budget))  # the candidates (and ``lik``) are BM25's feed, then S3's spans
    best_bm25 = max(q["lik"][:n_bm25], default=-np.inf)
    best_s3 = max(q["lik"][n_bm25:], default=-np.inf)
    share = hi if best_bm25 >= best_s3 else lo
    return shared_spans(q["bias"], q["bm25"], q["s3"], budget, share)


def replay(questions: list[dict], budget: int) -> None:
    lengths = sorted({q["length"] for q in questions})
    for length in [None, *lengths] if len(lengths) > 1 else [None]:
        qs = [q for q in questions if length is None or q["length"] == length]
        print(f"\n== {'all lengths' if length is None else f'{length} tokens'} ==")
        line = compared(qs, budget)
        line("rerank", family_means(qs, lambda q: reranked(q, budget, True)))
        for pool in POOLS if all("s3_pool" in q for q in qs) else ():
            line(f"rerank, s3 pool {pool}x", family_means(qs, lambda q, p=pool: reranked(q, budget, True, p)))
        line("rerank, no bias", family_means(qs, lambda q: reranked(q, budget, False)))
        for hi, lo in ((0.9, 0.1), (0.7, 0.3), (0.6, 0.2)):
            line(f"share {hi} / {lo}", family_means(qs, lambda q, a=hi, b=lo: lik_share(q, budget, a, b)))


def main(argv: list[str] | None = None) -> int:
    args = gather_parser(__doc__).parse_args(argv)
    extra = (
        None if args.replay else (lambda r, sample, row: question_likelihoods(r, sample, row, args.budget))
    )
    replay(questions_of(args, extra), args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
