"""Answer-scoring metrics of the evaluation harness, with LongBench's and RULER's definitions.

The tasks of ``s3attn.evaluation.tasks`` use two: ``qa_f1`` (multi-document QA) and ``string_match_all``
(NIAH and the RULER tasks). LongBench (THUDM/LongBench ``metrics.py``) scores one prediction against one
ground truth and its scorer keeps the max over the ground truths; RULER (NVIDIA/RULER
``scripts/eval/synthetic/constants.py``) scores lists of predictions against lists of reference lists by
case-insensitive substring match. Both are written here from those definitions;
``string_match_all`` returns RULER's 0-100 number rounded to 2 decimals.

``score`` is the per-sample entry point; it returns a fraction in [0, 1] for every metric (RULER's
per-sample recall, unrounded), so a task's result is the mean of ``score`` and both benchmarks' reported
numbers are that mean x 100.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

from s3attn.errors import S3Error

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace (SQuAD style)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _token_f1(pred_tokens: Sequence[str], truth_tokens: Sequence[str]) -> float:
    same = sum((Counter(pred_tokens) & Counter(truth_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def qa_f1_score(prediction: str, ground_truth: str, **_: object) -> float:
    """Bag-of-tokens F1 between the normalised prediction and ground truth."""
    return _token_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


# ---- RULER ----------------------------------------------------------------------------------------------


def _match_all_one(prediction: str, refs: Sequence[str]) -> float:
    pred = prediction.lower()
    return sum(1.0 for r in refs if r.lower() in pred) / len(refs)


def _check_ruler_args(name: str, preds: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
    if isinstance(preds, str):
        raise S3Error(f"{name}: preds must be a list of predictions, not one string")
    if not preds or len(preds) != len(refs):
        raise S3Error(
            f"{name}: need as many reference lists as predictions (got {len(preds)} and {len(refs)})"
        )
    if any(isinstance(r, str) or not r for r in refs):
        raise S3Error(f"{name}: each entry of refs must be a non-empty list of strings")


def string_match_all(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """RULER: mean over samples of the fraction of references found (case-insensitive substring), x100."""
    _check_ruler_args("string_match_all", preds, refs)
    return round(100 * sum(_match_all_one(p, r) for p, r in zip(preds, refs)) / len(preds), 2)


# ---- Dispatch -------------------------------------------------------------------------------------------

_PAIR_METRICS: dict[str, Callable[..., float]] = {
    "qa_f1": qa_f1_score,
}
_LIST_METRICS: dict[str, Callable[[str, Sequence[str]], float]] = {
    "string_match_all": _match_all_one,
}
METRIC_NAMES: tuple[str, ...] = tuple(_PAIR_METRICS) + tuple(_LIST_METRICS)


def score(metric_name: str, prediction: str, answers: list[str], **kw: object) -> float:
    """Score one prediction in [0, 1] with the named metric.

    LongBench's qa_f1 (``qa_f1_score`` is accepted too) takes the max over ``answers``; RULER's
    string_match_all scores the whole ``answers`` list at once.
    """
    name = metric_name.removesuffix("_score")
    if isinstance(answers, str) or not answers:
        raise S3Error(f"score: answers must be a non-empty list of strings (metric {metric_name!r})")
    if name in _LIST_METRICS:
        return float(_LIST_METRICS[name](prediction, answers))
    if name not in _PAIR_METRICS:
        raise S3Error(f"score: unknown metric {metric_name!r}; choose one of {', '.join(METRIC_NAMES)}")
    fn = _PAIR_METRICS[name]
    return float(max(fn(prediction, truth, **kw) for truth in answers))
