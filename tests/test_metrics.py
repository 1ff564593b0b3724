"""Metrics on hand-computed cases: LongBench definitions, RULER string matching, the score() dispatcher."""

from __future__ import annotations

import pytest

from s3attn.errors import S3Error
from s3attn.evaluation.metrics import (
    METRIC_NAMES,
    classification_score,
    code_sim_score,
    count_score,
    normalize_answer,
    qa_f1_score,
    retrieval_score,
    rouge_score,
    score,
    string_match_all,
    string_match_part,
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


def test_rouge_l_known_pairs():
    # LCS "the gunman" = 2 words; P = 2/4, R = 2/6 -> F = 0.4
    assert rouge_score("police killed the gunman", "the gunman was killed by police") == pytest.approx(
        0.4, abs=1e-6
    )
    assert rouge_score("a b c d", "a b c d") == pytest.approx(1.0, abs=1e-6)
    assert rouge_score("x y", "a b") == 0.0
    assert rouge_score("", "a b") == 0.0
    assert rouge_score("...", "a b") == 0.0  # no sentence left after splitting on "."
    # summary level: union LCS over "."-separated sentences; one flat LCS would only find 2 of 4 words
    assert rouge_score("c d. a b", "a b c d") == pytest.approx(1.0, abs=1e-6)
    # the rouge package counts distinct words: a repeated word does not lower precision
    assert rouge_score("the the cat", "the cat") == pytest.approx(1.0, abs=1e-6)
    # case-sensitive like the package: only "cat" matches -> P = R = 1/2
    assert rouge_score("The cat", "the cat") == pytest.approx(0.5, abs=1e-6)


def test_classification():
    classes = ["sports", "politics", "science"]
    assert classification_score("This is about sports.", "sports", all_classes=classes) == 1.0
    assert classification_score("sports or politics", "sports", all_classes=classes) == 0.5
    assert classification_score("politics", "sports", all_classes=classes) == 0.0
    assert classification_score("no idea", "sports", all_classes=classes) == 0.0
    # a class that is a proper substring of the truth is not counted against it
    assert classification_score("world news", "world news", all_classes=["news", "world news"]) == 1.0
    with pytest.raises(S3Error, match="all_classes"):
        classification_score("sports", "sports")


def test_retrieval_and_count():
    assert retrieval_score("Paragraph 3", "Paragraph 3") == 1.0
    assert retrieval_score("It is paragraph 3, maybe 5.", "Paragraph 3") == 0.5
    assert retrieval_score("Paragraph 13", "Paragraph 3") == 0.0
    assert retrieval_score("I don't know", "Paragraph 3") == 0.0
    with pytest.raises(S3Error, match="Paragraph N"):
        retrieval_score("3", "three")
    assert count_score("There are 12 unique paragraphs.", "12") == 1.0
    assert count_score("12 or 13", "12") == 0.5
    assert count_score("many", "12") == 0.0


def test_code_sim_first_code_line_and_rounding():
    pred = "```python\n# add one\nreturn x + 1\n```"
    assert code_sim_score(pred, "return x + 1") == 1.0
    # "return x+1" vs "return x + 1": 10 matching chars of 22 -> ratio 20/22 -> 91 % -> 0.91
    assert code_sim_score("return x+1", "return x + 1") == 0.91
    assert code_sim_score("\n\nfoo()\nbar()", "foo()") == 1.0  # leading newlines skipped, first line taken
    assert code_sim_score("# only a comment", "foo()") == 0.0
    assert code_sim_score("", "foo()") == 0.0


def test_ruler_string_match():
    preds = ["The numbers are 123 and 456."]
    refs = [["123", "456", "789"]]
    assert string_match_all(preds, refs) == 66.67
    assert string_match_part(preds, refs) == 100.0
    # averaged over samples, case-insensitive
    assert string_match_all(["ALPHA beta", "gamma"], [["alpha", "Beta"], ["delta"]]) == 50.0
    assert string_match_part(["ALPHA", "gamma"], [["alpha", "zeta"], ["delta"]]) == 50.0
    assert string_match_all(["alpha"], [["alpha", "beta"]]) == 50.0
    with pytest.raises(S3Error):
        string_match_all("alpha", [["alpha"]])
    with pytest.raises(S3Error):
        string_match_part(["a", "b"], [["a"]])


def test_score_dispatch():
    assert set(METRIC_NAMES) == {
        "qa_f1",
        "rouge",
        "classification",
        "retrieval",
        "count",
        "code_sim",
        "string_match_all",
        "string_match_part",
    }
    # LongBench metrics: max over the answers
    assert score("qa_f1", "the cat sat", ["dog", "a cat sat down"]) == pytest.approx(0.8)
    assert score("qa_f1", "the cat sat", ["dog", "cat sat"]) == 1.0
    assert score("qa_f1_score", "cat", ["cat"]) == 1.0  # LongBench function names accepted
    assert (
        score("classification", "sports", ["politics", "sports"], all_classes=["sports", "politics"]) == 1.0
    )
    assert score("retrieval", "Paragraph 2", ["Paragraph 7", "Paragraph 2"]) == 1.0
    # RULER metrics: the answers list at once, as a fraction
    assert score("string_match_all", "123 and 456", ["123", "456", "789"]) == pytest.approx(2 / 3)
    assert score("string_match_part", "123", ["123", "456"]) == 1.0
    assert score("string_match_all", "nothing", ["123"]) == 0.0
    with pytest.raises(S3Error, match="unknown metric"):
        score("bleu", "a", ["a"])
    with pytest.raises(S3Error, match="non-empty list"):
        score("qa_f1", "a", [])
    with pytest.raises(S3Error, match="non-empty list"):
        score("string_match_all", "a", "a")  # type: ignore[arg-type]
