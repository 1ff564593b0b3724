"""The ``likelihood`` fusion: the model itself judges both retrievers' finds by query likelihood.

Each candidate (BM25's passages, its feed at the full budget, and S3's spans within ``likelihood_pool``
budgets, so the model can bring in a find S3 ranked below the budget) is read alone by the model in
``PROMPT``, and scored by the mean log-probability of the question's tokens after it: how likely the model
finds the question once it has read that candidate (query likelihood, as UPR does: Sachan
et al., 2022, "Improving Passage Retrieval with Zero-Shot Question Generation"). The bias spans go first,
then the candidates by that score, best first, within the budget. The score compares a paraphrase's needle
that only S3 found with the passage whose words BM25 matched on one scale, so neither retriever's find is
dropped by a share or a floor. Every span's ``why`` carries its ``question_logprob``.

It costs one forward pass over the candidates (``1 + likelihood_pool`` budgets in tokens, plus the prompt
per candidate), batched ``BATCH`` at a time.
"""

from __future__ import annotations

import torch

from s3attn.retrieval.fusion import normalised
from s3attn.retrieval.spans import SOURCE_BIAS, Span, fuse

PROMPT = ("Passage:", "\nPlease write a question about this passage.\nQuestion:")
BATCH = 8  # candidates per forward pass


def question_logprobs(model, tokenizer, passages: list[list[int]], question: str) -> list[float]:
    """Per passage (token ids), the mean log-probability of ``question``'s tokens after it in ``PROMPT``.
    Passages of similar length share a batch (less padding), in the caller's order on return."""
    pre, post = (
        tokenizer(" " + p if i else p, add_special_tokens=False)["input_ids"] for i, p in enumerate(PROMPT)
    )
    q_ids = tokenizer(" " + question.strip(), add_special_tokens=False)["input_ids"]
    seqs = [pre + list(p) + post + q_ids for p in passages]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = [0.0] * len(seqs)
    for i in range(0, len(order), BATCH):
        rows = order[i : i + BATCH]
        for r, v in zip(rows, _batch_logprobs(model, [seqs[r] for r in rows], q_ids)):
            out[r] = v
    return out


@torch.no_grad()
def _batch_logprobs(model, batch: list[list[int]], q_ids: list[int]) -> list[float]:
    """:func:`question_logprobs` of one batch of whole sequences, each ending in ``q_ids``; logits only at
    the positions that predict a question token in some row (not over every passage token)."""
    lengths = [len(s) for s in batch]
    ids_BT = torch.zeros(len(batch), max(lengths), dtype=torch.long)
    mask_BT = torch.zeros_like(ids_BT)
    for j, s in enumerate(batch):  # right-padded: a causal model's positions before the pad are unchanged
        ids_BT[j, : len(s)], mask_BT[j, : len(s)] = torch.tensor(s), 1
    first = min(lengths) - len(q_ids) - 1  # the earliest position predicting a question token
    keep_K = torch.arange(first, max(lengths) - 1)
    dev = model.device
    logits_BKV = model(
        input_ids=ids_BT.to(dev),
        attention_mask=mask_BT.to(dev),
        use_cache=False,
        logits_to_keep=keep_K.to(dev),
    ).logits
    target_Q = torch.tensor(q_ids, device=dev)
    out = []
    for j, n in enumerate(lengths):
        at_Q = torch.arange(n - len(q_ids) - 1, n - 1, device=dev) - first
        logp_QV = logits_BKV[j, at_Q].float().log_softmax(-1)
        out.append(float(logp_QV.gather(1, target_Q[:, None]).mean()))
    return out


def scorer(model, tokenizer, tokens_of, question: str):
    """``score(candidates)`` for :func:`likelihood_spans`: :func:`question_logprobs` of each candidate's
    tokens (``tokens_of(start, end)``)."""

    def score(cands: list[Span]) -> list[float]:
        passages = [tokens_of(c.start, c.end).tolist() for c in cands]
        return question_logprobs(model, tokenizer, passages, question)

    return score


def likelihood_spans(
    bias: list[Span], bm25_hits: list[Span], s3: list[Span], budget: int, score
) -> list[Span]:
    """Bias spans first, then BM25's and S3's candidates (BM25's feed at ``budget``; ``s3``: S3's spans, at
    any budget) by ``score(candidates)`` (one question log-probability each, see :func:`scorer`), best
    first, merged, in document order, within ``budget``."""
    cands = (normalised(fuse([bm25_hits], budget)) if bm25_hits else []) + normalised(s3)
    scored = [
        c._replace(score=v, why={**c.why, "question_logprob": round(v, 4)})
        for c, v in zip(cands, score(cands))
    ]
    return fuse([bias, scored], budget, first=(SOURCE_BIAS,))


def explain(spans) -> str | None:
    """One line for ``--show-spans`` when ``spans`` were chosen by this fusion, else None."""
    best: dict[str, float] = {}
    for s in spans:
        if "question_logprob" in s.why:
            for src in s.source.split("+"):
                if src != SOURCE_BIAS:
                    best[src] = max(best.get(src, -float("inf")), s.why["question_logprob"])
    if not best:
        return None
    found = ", ".join(f"{src}'s best {v:.2f}" for src, v in sorted(best.items()))
    return (
        "candidates ranked by how likely the model finds the question after each (mean log-probability "
        f"per question token; fed: {found})"
    )
