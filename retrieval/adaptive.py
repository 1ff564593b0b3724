"""Adaptive hybrid fusion: each question decides how far to trust BM25 and S3 from their own evidence.

A fixed mix (``linear``'s weight and relevance floor) drops a retriever's one good candidate whenever the other
retriever likes something else: an S3-only span scores at most ``1 - bm25_weight`` of a passage both like, so
a paraphrased question, whose words BM25 cannot find, loses the needle S3 found. Here nothing is dropped by a
floor. Instead each question gets a **share** of the budget per retriever, from two signals:

* **BM25 term coverage** (``Hit.coverage``): the IDF-weighted share of the question's terms present in BM25's
  best passage. A question asked in the document's words covers ~1.0; a paraphrase covers little (its rare
  words are absent or scattered), so a high BM25 score made of common words earns little trust.
* **S3 peak prominence**: how far S3's best peak stands above the spread of its peaks,
  ``(best - median) / best`` in [0, 1]; a flat S3 landscape (every peak alike) has nothing to say.

``bm25_share = clip(sigmoid(p * (logit(c) - logit(c0) - log(m * s))), min_share, 1 - min_share)`` with ``c``
the coverage, ``c0 = coverage_center`` (the coverage at which the two retrievers are trusted alike), ``s`` the
prominence, ``m = prominence_scale`` (``m * s`` above 1 pulls budget to S3, below 1 pushes it to BM25; ``m = 0``
ignores prominence) and ``p = coverage_power`` (how sharply). A question asked in the document's words hands
BM25 all but ``min_share``; a paraphrase hands it ``min_share``. ``min_share`` of the budget is always each
retriever's (when it has candidates), so its best candidates are fed whatever the other says.

The shares interleave the two rankings: a candidate's **slot** is the tokens its retriever has ranked up to
and including it (overlapping candidates counted once), divided by its retriever's share; candidates are taken by slot (earliest first), so the
budget fills at the two retrievers' rates and a retriever that runs out of candidates leaves its room to the
other. Every span's ``why`` says what it got and why (``bm25_coverage``, ``s3_prominence``, ``bm25_share``,
``slot``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from s3attn.retrieval.spans import SOURCE_BIAS, Span, fuse


class Trust(NamedTuple):
    """How far one question trusts each retriever (see the module docstring)."""

    bm25_coverage: float  # IDF-weighted share of the question's terms in BM25's best passage (0 if no hit)
    s3_prominence: float  # (best peak - median peak) / best peak of the S3 spans (0 if none)
    bm25_share: float  # share of the budget left after the bias spans that BM25 fills at its rate

    def explain(self) -> str:
        """One line for ``--show-spans``: the shares and the evidence they came from."""
        return (
            f"bm25 gets {self.bm25_share:.0%} of the budget (its best passage holds {self.bm25_coverage:.0%} "
            f"of the question's term weight), s3 {1 - self.bm25_share:.0%} (its best peak stands "
            f"{self.s3_prominence:.0%} above the median peak)"
        )


def trust_in(why: dict) -> Trust | None:
    """The ``Trust`` an adaptive span's ``why`` carries, else None."""
    if "bm25_share" not in why:
        return None
    return Trust(why.get("bm25_coverage", 0.0), why.get("s3_prominence", 0.0), why["bm25_share"])


def prominence(s3: list[Span]) -> float:
    """(best - median) / best of the S3 spans' scores (their smoothed peaks); 0 without a positive peak."""
    scores = np.array([s.score for s in s3], dtype=np.float64)
    if scores.size == 0 or scores.max() <= 0:
        return 0.0
    best = float(scores.max())
    return float(np.clip((best - float(np.median(scores))) / best, 0.0, 1.0))


class ShareRule(NamedTuple):
    """The parameters of the share rule (``FusionConfig``'s adaptive fields; see the module docstring)."""

    # chosen on tuning seeds by bench/tune_adaptive.py (best worst-family margin, then mean evidence recall)
    coverage_center: float = 0.25
    coverage_power: float = 1.0
    prominence_scale: float = 2.5
    min_share: float = 0.1


DEFAULT_RULE = ShareRule()  # the defaults of FusionConfig's adaptive fields


def _logit(x: float) -> float:
    x = min(max(x, 1e-6), 1 - 1e-6)
    return float(np.log(x / (1 - x)))


def trust(bm25: list[Span], s3: list[Span], rule: ShareRule) -> Trust:
    """The question's ``Trust`` from BM25's hits (``why["coverage"]``, best first) and the S3 spans."""
    c = float(bm25[0].why.get("coverage", 0.0)) if bm25 else 0.0
    s = prominence(s3)
    if not bm25 or not s3:  # one retriever has nothing: the other takes the whole budget
        return Trust(c, s, 0.0 if not bm25 else 1.0)
    pull = float(np.log(max(rule.prominence_scale * s, 1e-6))) if rule.prominence_scale > 0 else 0.0
    z = rule.coverage_power * (_logit(c) - _logit(rule.coverage_center) - pull)
    share = 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
    return Trust(c, s, float(np.clip(share, rule.min_share, 1.0 - rule.min_share)))


def _union_cumsum(spans: list[Span]) -> np.ndarray:
    """Tokens covered by the first 1, 2, ... of ``spans`` (in the given order), overlaps counted once."""
    covered: list[tuple[int, int]] = []
    out, total = [], 0
    for x in spans:
        new = x.length - sum(max(0, min(e, x.end) - max(b, x.start)) for b, e in covered)
        total += max(new, 0)
        covered.append((x.start, x.end))
        out.append(total)
    return np.asarray(out, dtype=np.float64)


def slotted(spans: list[Span], share: float, extra: dict) -> list[Span]:
    """``spans`` (one retriever's, any order) scored by slot: rank by own score, then the tokens ranked up
    to and including each (overlaps counted once) over ``share``; the fused score is ``1 / (1 + slot)`` (earlier slot, higher)."""
    if share <= 0 or not spans:
        return []
    order = sorted(spans, key=lambda x: (-x.score, x.start))
    cum = _union_cumsum(order)
    out = []
    for x, tokens in zip(order, cum):
        slot = float(tokens / share)
        why = {**x.why, **extra, "slot": round(slot, 1)}
        out.append(x._replace(score=1.0 / (1.0 + slot), why=why))
    return out


def adaptive_spans(
    bias: list[Span], bm25: list[Span], s3: list[Span], budget: int, rule: ShareRule
) -> tuple[list[Span], Trust]:
    """Bias spans first, then BM25 passages and S3 spans interleaved at the question's shares; the spans
    (merged, in document order, within ``budget``) and the ``Trust`` they were chosen with."""
    t = trust(bm25, s3, rule)
    extra = {
        "bm25_coverage": round(t.bm25_coverage, 4),
        "s3_prominence": round(t.s3_prominence, 4),
        "bm25_share": round(t.bm25_share, 4),
    }
    return shared_spans(bias, bm25, s3, budget, t.bm25_share, extra), t


def shared_spans(
    bias: list[Span],
    bm25: list[Span],
    s3: list[Span],
    budget: int,
    bm25_share: float,
    extra: dict | None = None,
) -> list[Span]:
    """Bias spans first, then BM25 passages and S3 spans interleaved at ``bm25_share`` / ``1 - bm25_share``
    (by slot), merged, in document order, within ``budget``."""
    cands = slotted(bm25, bm25_share, extra or {}) + slotted(s3, 1.0 - bm25_share, extra or {})
    return fuse([bias, cands], budget, first=(SOURCE_BIAS,))
