"""A try for the fusion (issue 14, target 4): rank both retrievers' finds by how likely the model finds the
question after each one (query likelihood, as UPR does: Sachan et al., 2022, "Improving Passage Retrieval with
Zero-Shot Question Generation").

Per tuning question, BM25's and S3's candidates are each taken at the full budget (``tune_adaptive.gather``).
Each candidate span is read alone by the model in ``retrieval.likelihood.PROMPT``, and the mean
log-probability of the question's tokens after it is kept (``lik``; ``question_logprobs``, the fusion's own
code). The model is the one the index was built with. Replayed offline:

* ``rerank``: the bias spans first, then every candidate by its likelihood, best first, within the budget;
* ``rerank, no bias``: the same without the bias spans;
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


def candidates(q: dict, budget: int) -> list:
    """BM25's and S3's own feeds at the full budget, each span a candidate."""
    return bm25_feed(q, budget) + normalised(q["s3"])


def question_likelihoods(r, sample, row: dict, budget: int) -> dict:
    """The question's mean log-probability after each candidate (``lik``, candidates' order), as the
    ``likelihood`` fusion computes it (``retrieval.likelihood.question_logprobs``)."""
    passages = [r.store.tokens(s.start, s.end).tolist() for s in candidates(row, budget)]
    return {"lik": question_logprobs(r.model, r.tokenizer, passages, sample.question)}


def reranked(q: dict, budget: int, bias: bool) -> list:
    scored = [s._replace(score=v) for s, v in zip(candidates(q, budget), q["lik"])]
    return fuse([q["bias"] if bias else [], scored], budget)


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
