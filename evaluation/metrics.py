"""Answer-scoring metrics of the evaluation harness, with LongBench's and RULER's definitions.

LongBench (THUDM/LongBench ``metrics.py``) scores one prediction against one ground truth and its scorer
keeps the max over the ground truths; RULER (NVIDIA/RULER ``scripts/eval/synthetic/constants.py``) scores
lists of predictions against lists of reference lists by case-insensitive substring match. Every function
here is written from those definitions; where we differ it is said next to the function:

* ``rouge_score``: the ``rouge`` package's ROUGE-L (summary-level union LCS over ``"."``-split sentences,
  unique-word counts), reimplemented without the package. Unlike the package, very long inputs do not hit
  Python's recursion limit (LongBench then silently scored 0.0).
* ``code_sim_score``: fuzzywuzzy's ``fuzz.ratio`` is replaced by ``difflib.SequenceMatcher.ratio`` rounded
  to an integer percent, which is what fuzzywuzzy computes without python-Levenshtein; with that speed-up
  installed fuzzywuzzy uses Levenshtein's ratio, which can differ by a point or two.
* ``classification_score``: LongBench's fuzzy fallback for "no class named" is dead code (its test is
  ``list != 0``, always true), so such a prediction scores 0.0; we keep that effective behaviour. Its
  filtering loop removes from the list it iterates over; we filter without that skipping side effect.
* ``string_match_all`` / ``string_match_part`` return RULER's 0-100 numbers rounded to 2 decimals.

``score`` is the per-sample entry point; it returns a fraction in [0, 1] for every metric (RULER's
per-sample recall, unrounded, for the two RULER metrics), so a task's result is the mean of ``score`` and
both benchmarks' reported numbers are that mean x 100. Chinese variants are not provided.
"""

from __future__ import annotations

import difflib
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


# ---- ROUGE-L -------------------------------------------------------------------------------------------


def _rouge_sentences(text: str) -> list[str]:
    # As the rouge package: split on ".", keep non-empty pieces, collapse their whitespace.
    return [" ".join(piece.split()) for piece in text.split(".") if piece]


def _lcs_words(ref: list[str], hyp: list[str]) -> set[str]:
    """Words of one longest common subsequence, chosen with the rouge package's tie-breaking."""
    n, m = len(ref), len(hyp)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        row, prev, word = table[i], table[i - 1], ref[i - 1]
        for j in range(1, m + 1):
            row[j] = prev[j - 1] + 1 if word == hyp[j - 1] else max(prev[j], row[j - 1])
    words: set[str] = set()
    i, j = n, m
    while i > 0 and j > 0:
        if ref[i - 1] == hyp[j - 1]:
            words.add(ref[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return words


def rouge_score(prediction: str, ground_truth: str, **_: object) -> float:
    """ROUGE-L F as the ``rouge`` package computes it (summary-level union LCS); 0.0 for empty input.

    Sentences are the ``"."``-separated pieces, words are split on single spaces, and the package counts
    words as sets: the union-LCS and both lengths (m reference words, n prediction words) count distinct
    words. R = lcs/m, P = lcs/n, F = 2PR / (P + R + 1e-8). Case-sensitive, no stemming.
    """
    hyp_sents = _rouge_sentences(prediction)
    ref_sents = _rouge_sentences(ground_truth)
    if not hyp_sents or not ref_sents:
        return 0.0
    hyp_words = [s.split(" ") for s in hyp_sents]
    m = len({w for s in ref_sents for w in s.split(" ")})
    n = len({w for ws in hyp_words for w in ws})
    union: set[str] = set()
    lcs = 0
    for ref_s in ref_sents:
        before = len(union)
        ref_words = ref_s.split(" ")
        for ws in hyp_words:
            union |= _lcs_words(ref_words, ws)
        lcs += len(union) - before
    recall, precision = lcs / m, lcs / n
    return 2.0 * precision * recall / (precision + recall + 1e-8)


# ---- Classification, retrieval, counting, code ----------------------------------------------------------


def classification_score(
    prediction: str, ground_truth: str, all_classes: Sequence[str] = (), **_: object
) -> float:
    """1/k if the ground truth is among the k class names found in the prediction, else 0.0.

    Class names that are a proper substring of the ground truth are not counted (LongBench). A prediction
    naming no class scores 0.0, LongBench's effective behaviour (see the module docstring).
    """
    if not all_classes:
        raise S3Error("classification metric: pass all_classes=[...] (the label set of the task)")
    found = [c for c in all_classes if c in prediction]
    found = [c for c in found if not (c in ground_truth and c != ground_truth)]
    if ground_truth in found:
        return 1.0 / len(found)
    return 0.0


def _numbers_hit_rate(prediction: str, target: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    if not numbers:
        return 0.0
    return sum(1 for x in numbers if x == target) / len(numbers)


def count_score(prediction: str, ground_truth: str, **_: object) -> float:
    """Fraction of the numbers in the prediction that equal the ground-truth count."""
    return _numbers_hit_rate(prediction, str(ground_truth))


def retrieval_score(prediction: str, ground_truth: str, **_: object) -> float:
    """Fraction of the numbers in the prediction equal to N of the ground truth's ``Paragraph N``."""
    match = re.search(r"Paragraph (\d+)", ground_truth)
    if match is None:
        raise S3Error(
            f"retrieval metric: ground truth {ground_truth!r} has no 'Paragraph N'; fix the answers"
        )
    return _numbers_hit_rate(prediction, match.group(1))


def code_sim_score(prediction: str, ground_truth: str, **_: object) -> float:
    """Similarity of the prediction's first code line to the ground truth, in [0, 1], 0.01 steps.

    The first line without a backtick, ``#`` or ``//`` is compared (LongBench); the similarity is
    ``round(100 * SequenceMatcher.ratio()) / 100`` (fuzzywuzzy's pure-Python ``fuzz.ratio`` / 100), and
    0.0 when either string is empty, as in fuzzywuzzy.
    """
    line = ""
    for candidate in prediction.lstrip("\n").split("\n"):
        if "`" not in candidate and "#" not in candidate and "//" not in candidate:
            line = candidate
            break
    if not line or not ground_truth:
        return 0.0
    return round(100 * difflib.SequenceMatcher(None, line, ground_truth).ratio()) / 100


# ---- RULER ----------------------------------------------------------------------------------------------


def _match_all_one(prediction: str, refs: Sequence[str]) -> float:
    pred = prediction.lower()
    return sum(1.0 for r in refs if r.lower() in pred) / len(refs)


def _match_part_one(prediction: str, refs: Sequence[str]) -> float:
    pred = prediction.lower()
    return max(1.0 if r.lower() in pred else 0.0 for r in refs)


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


def string_match_part(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """RULER: mean over samples of 1 if any reference is found (case-insensitive substring), x100."""
    _check_ruler_args("string_match_part", preds, refs)
    return round(100 * sum(_match_part_one(p, r) for p, r in zip(preds, refs)) / len(preds), 2)


# ---- Dispatch -------------------------------------------------------------------------------------------

_PAIR_METRICS: dict[str, Callable[..., float]] = {
    "qa_f1": qa_f1_score,
    "rouge": rouge_score,
    "classification": classification_score,
    "retrieval": retrieval_score,
    "count": count_score,
    "code_sim": code_sim_score,
}
_LIST_METRICS: dict[str, Callable[[str, Sequence[str]], float]] = {
    "string_match_all": _match_all_one,
    "string_match_part": _match_part_one,
}
METRIC_NAMES: tuple[str, ...] = tuple(_PAIR_METRICS) + tuple(_LIST_METRICS)


def score(metric_name: str, prediction: str, answers: list[str], **kw: object) -> float:
    """Score one prediction in [0, 1] with the named metric.

    LongBench metrics (qa_f1, rouge, classification, retrieval, count, code_sim; the ``*_score`` function
    names are accepted too) take the max over ``answers``; ``classification`` needs ``all_classes=``.
    RULER metrics (string_match_all, string_match_part) score the whole ``answers`` list at once.
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
