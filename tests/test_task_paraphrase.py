"""Paraphrased needles: the data (no shared content stem, answers in the needle) and the three generators."""

from __future__ import annotations

import re

import bm25s.stopwords
import pytest
import snowballstemmer

from s3attn.errors import S3Error
from s3attn.evaluation.task_paraphrase import families, paraphrase_records
from s3attn.evaluation.tasks import (
    MULTIKEY_PER_CONTEXT,
    NEEDLES_PER_CONTEXT,
    literal_niah,
    paraphrase_multikey,
    paraphrase_niah,
)

HAYSTACK = " ".join(f"Sentence number {i} of the filler text is about rivers and hills." for i in range(900))
_NUMERALS = set(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand "
    "million".split()
)
_STOP = set(bm25s.stopwords.STOPWORDS_EN) | _NUMERALS
_STEMMER = snowballstemmer.stemmer("english")


def words(text: str) -> int:
    return len(text.split())


def content_stems(text: str) -> set[str]:
    """Lower-cased words, possessives dropped, minus stop words and numerals, Snowball-stemmed."""
    text = re.sub(r"'s\b|(?<=s)'", "", text.lower().replace("\u2019", "'"))
    tokens = re.findall(r"[a-z0-9]+", text)
    return {_STEMMER.stemWord(t) for t in tokens if t not in _STOP and not t.isdigit()}


RECORDS = paraphrase_records()


def test_record_counts_and_fields():
    assert len(RECORDS) >= 48
    assert len(families()) >= 8 and len(families()) >= NEEDLES_PER_CONTEXT
    assert all(len(m) >= MULTIKEY_PER_CONTEXT for m in families().values())
    for field in ("needle", "paraphrase", "literal"):
        values = [r[field] for r in RECORDS]
        assert len(set(values)) == len(values), f"duplicate {field}"


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r["needle"][:40])
def test_paraphrase_shares_no_content_stem(record):
    assert not content_stems(record["paraphrase"]) & content_stems(record["needle"])
    assert record["paraphrase"].endswith("?") and record["literal"].endswith("?")
    assert all(a.lower() in record["needle"].lower() for a in record["answers"])


def test_answers_differ_within_a_family():
    for members in families().values():
        for r in members:
            others = [o["needle"].lower() for o in members if o is not r]
            assert not any(r["answers"][0].lower() in o for o in others)


@pytest.mark.parametrize("seed", [0, 7])
def test_niah_context_shared_by_its_questions_and_literal_twin(seed):
    samples = [paraphrase_niah(HAYSTACK, words, 3000, seed, n) for n in range(NEEDLES_PER_CONTEXT)]
    assert len({s.context for s in samples}) == 1
    assert len({s.meta["needle"] for s in samples}) == NEEDLES_PER_CONTEXT
    assert len({s.meta["family"] for s in samples}) == NEEDLES_PER_CONTEXT
    assert abs(words(samples[0].context) - 3000) <= 60
    for n, s in enumerate(samples):
        twin = literal_niah(HAYSTACK, words, 3000, seed, n)
        assert twin.context == s.context and twin.answers == s.answers and twin.question != s.question
        assert s.task == "paraphrase_niah" and twin.task == "literal_niah" and s.metric == "string_match_all"
        ((a, b),) = s.meta["evidence"]
        assert s.context[a:b] == s.meta["needle"] and s.context.count(s.meta["needle"]) == 1
        assert s.answers[0] in s.meta["needle"] and 0.0 <= s.meta["depth"] <= 1.0
        assert s.meta["instruction"] and s.meta["answer_prefix"]
    depths = sorted(s.meta["depth"] for s in samples)
    assert depths[0] < 0.1 and depths[-1] > 0.9


def test_number_selects_context_and_seed_varies_it():
    first = paraphrase_niah(HAYSTACK, words, 2000, 3, 0).context
    assert paraphrase_niah(HAYSTACK, words, 2000, 3, NEEDLES_PER_CONTEXT - 1).context == first
    assert paraphrase_niah(HAYSTACK, words, 2000, 3, NEEDLES_PER_CONTEXT).context != first
    assert paraphrase_niah(HAYSTACK, words, 2000, 4, 0).context != first
    assert paraphrase_niah(HAYSTACK, words, 2000, 3, 0) == paraphrase_niah(HAYSTACK, words, 2000, 3, 0)


@pytest.mark.parametrize("group", [0, 1, 2])
def test_multikey_plants_one_family(group):
    numbers = range(group * MULTIKEY_PER_CONTEXT, (group + 1) * MULTIKEY_PER_CONTEXT)
    samples = [paraphrase_multikey(None, words, 2500, 5, n) for n in numbers]
    assert len({s.context for s in samples}) == 1
    planted = samples[0].meta["needles_in_context"]
    assert len(planted) == MULTIKEY_PER_CONTEXT and len({s.meta["family"] for s in samples}) == 1
    assert sorted(s.meta["needle"] for s in samples) == sorted(planted)
    assert len({s.answers[0].lower() for s in samples}) == MULTIKEY_PER_CONTEXT
    by_needle = {r["needle"]: r for r in RECORDS}
    for s in samples:
        ((a, b),) = s.meta["evidence"]
        assert s.context[a:b] == s.meta["needle"]
        assert s.question == by_needle[s.meta["needle"]]["paraphrase"]
        others = [n for n in planted if n != s.meta["needle"]]
        assert not any(s.answers[0].lower() in n.lower() for n in others)


def test_bad_arguments():
    with pytest.raises(S3Error):
        paraphrase_niah(HAYSTACK, words, 2000, 0, -1)
    with pytest.raises(S3Error):
        literal_niah(HAYSTACK, words, 0, 0, 0)
    with pytest.raises(S3Error):
        paraphrase_multikey(HAYSTACK, words, 30, 0, 0)
