"""Every task generator names its evidence: ``context[a:b]`` is exactly the needle sentence / passage."""

from __future__ import annotations

import pytest

from s3attn.evaluation.tasks import (
    multidoc_qa,
    needle_haystack,
    public_domain_passages,
    ruler_common_words,
    ruler_niah,
    ruler_variable_tracking,
)

HAYSTACK = " ".join(f"Line {i} of the haystack talks about boats, bread and weather." for i in range(800))
SEEDS = [0, 1, 5]


def words(text: str) -> int:
    return len(text.split())


def slices(sample) -> list[str]:
    spans = sample.meta["evidence"]
    assert spans == sorted(spans) and all(isinstance(x, int) for ab in spans for x in ab)
    return [sample.context[a:b] for a, b in spans]


@pytest.mark.parametrize("seed", SEEDS)
def test_niah_evidence_is_the_needle(seed):
    s = needle_haystack(HAYSTACK, words, 1500, 0.4, seed)
    assert slices(s) == [s.meta["needle"]]


@pytest.mark.parametrize("kind", ["single", "multikey", "multivalue", "multiquery"])
@pytest.mark.parametrize("seed", SEEDS)
def test_ruler_niah_evidence_holds_the_asked_keys(kind, seed):
    s = ruler_niah(kind, HAYSTACK, words, 1500, seed)
    got = slices(s)
    asked = [n for n in s.meta["needles"] if any(f" {k} " in n for k in s.meta["asked_keys"])]
    if kind == "multikey":
        asked = [n for n in asked if s.answers[0] in n]
    assert sorted(got) == sorted(asked) and len(got) == len(s.answers)
    assert all(any(v in g for g in got) for v in s.answers)


@pytest.mark.parametrize("seed", SEEDS)
def test_vt_evidence_is_the_asked_chain(seed):
    s = ruler_variable_tracking(1500, words, seed, num_chains=2, num_hops=3)
    got = slices(s)
    chain = s.meta["chains"][0]
    assert len(got) == len(chain)
    assert all(g.startswith("VAR ") and g.endswith(".") for g in got)
    assert {g.split()[1] for g in got} == set(chain)
    assert any(g == f"VAR {chain[0]} = {s.meta['values'][0]}." for g in got)


def test_cwe_has_no_localized_evidence():
    assert ruler_common_words(1500, words, 0).meta["evidence"] == []


@pytest.mark.parametrize("seed", SEEDS)
def test_multidoc_evidence_is_the_planted_fact_in_the_gold_passage(seed):
    s = multidoc_qa(public_domain_passages(), 2500, words, seed)
    (fact,) = slices(s)
    assert fact == s.meta["fact"]
    a, b = s.meta["gold_passage"]
    assert s.context[a:b].startswith(s.meta["title"] + "\n")
    assert a <= s.meta["evidence"][0][0] < s.meta["evidence"][0][1] <= b
    assert s.context[:a].endswith(f"Passage {s.meta['passage_number']}:\n")
    assert s.context[b:].startswith("\n\nPassage ") or b == len(s.context)
