"""Metrics on hand-computed cases: LongBench's qa_f1, RULER string matching, the score() dispatcher."""

from __future__ import annotations

import pytest

from s3attn.errors import S3Error
from s3attn.evaluation.metrics import (
    METRIC_NAMES,
    normalize_answer,
    qa_f1_score,
    score,
    string_match_all,
)


def test_normalize_answer_drops_case_punctuation_articles_and_extra_space():
    assert normalize_answer("The  Cat, sat!\n on an   Apple.") == "cat sat on apple"
    assert normalize_answer("A theory of the 'Anthem'") == "theory of anthem"
    # articles only as whole words
    assert normalize_answer("Theatre and banana") == "theatre and banana"


def test_qa_f1_by_hand():
    # pred -> "cat sat" (2 tokens), truth -> "cat sat down" (3): P = 1, R = 2/3, F1 = 0.8
    assert qa_f1_score("The cat sat", "a cat sat down") == pytest.approx(0.8)
    # counts are clipped: x x y vs x y y share one x and one y -> P = R = 2/3
    assert qa_f1_score("x x y", "x y y") == pytest.approx(2 / 3)
    assert qa_f1_score("Paris!", "paris") == 1.0
    assert qa_f1_score("London", "Paris") == 0.0
    assert qa_f1_score("", "Paris") == 0.0


def test_ruler_string_match():
    preds = ["The numbers are 123 and 456."]
    refs = [["123", "456", "789"]]
    assert string_match_all(preds, refs) == 66.67
    # averaged over samples, case-insensitive
    assert string_match_all(["ALPHA beta", "gamma"], [["alpha", "Beta"], ["delta"]]) == 50.0
    assert string_match_all(["alpha"], [["alpha", "beta"]]) == 50.0
    with pytest.raises(S3Error):
        string_match_all("alpha", [["alpha"]])


def test_score_dispatch():
    assert set(METRIC_NAMES) == {
        "qa_f1",
        "string_match_all",
    }
    # LongBench metrics: max over the answers
    assert score("qa_f1", "the cat sat", ["dog", "a cat sat down"]) == pytest.approx(0.8)
    assert score("qa_f1", "the cat sat", ["dog", "cat sat"]) == 1.0
    assert score("qa_f1_score", "cat", ["cat"]) == 1.0  # LongBench function names accepted
    # RULER metrics: the answers list at once, as a fraction
    assert score("string_match_all", "123 and 456", ["123", "456", "789"]) == pytest.approx(2 / 3)
    assert score("string_match_all", "nothing", ["123"]) == 0.0
    with pytest.raises(S3Error, match="unknown metric"):
        score("bleu", "a", ["a"])
    with pytest.raises(S3Error, match="non-empty list"):
        score("qa_f1", "a", [])
    with pytest.raises(S3Error, match="non-empty list"):
        score("string_match_all", "a", "a")  # type: ignore[arg-type]
