"""Tests for s3attn.index_builder.bm25 / bm25_build: passages, search with a planted word, save/load, add, to_spans."""

from __future__ import annotations

import numpy as np
import pytest

from s3attn.constants import BM25_META, BM25_PASSAGES, BM25_TEXTS
from s3attn.errors import S3Error
from s3attn.index_builder.bm25 import BM25Index, Passage
from s3attn.index_builder.bm25_build import BM25Writer, make_passages
from s3attn.retrieval.spans import bm25_spans as to_spans

COMMON = "river stone garden window paper music yellow market engine silver forest ladder".split()


def _corpus(seed: int = 0) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Word-per-token synthetic index: 4 documents of common words (doc 2 is short)."""
    rng = np.random.default_rng(seed)
    lengths = [700, 450, 90, 600]
    words = [COMMON[i] for i in rng.integers(0, len(COMMON), sum(lengths))]
    ranges, pos = [], 0
    for d, n in enumerate(lengths):
        ranges.append((d, pos, pos + n))
        pos += n
    return words, ranges


def _texts(words: list[str], passages: list[Passage]) -> list[str]:
    return [" ".join(words[p.start : p.end]) for p in passages]


def test_passages_cover_every_doc_token_and_stay_in_doc():
    _, ranges = _corpus()
    ranges = [*ranges, (9, 1840, 1840)]  # an empty document gives no passage
    passages = make_passages(ranges, passage_tokens=128, stride=64)
    for doc_id, s, e in ranges:
        mine = [p for p in passages if p.doc_id == doc_id]
        cover = np.zeros(e - s, dtype=int)
        for p in mine:
            assert s <= p.start < p.end <= e
            assert p.end - p.start == min(128, e - s)
            cover[p.start - s : p.end - s] += 1
        assert (cover >= 1).all()
        starts = [p.start for p in mine]
        assert starts == sorted(starts)
        if e - s > 128:
            assert np.diff(starts).max() <= 64 and mine[-1].end == e
    assert not any(p.doc_id == 9 for p in passages)
    assert make_passages([(0, 10, 30)], 128, 64) == [Passage(0, 10, 30)]
    assert make_passages([(0, 0, 200)], 128, 64) == [
        Passage(0, 0, 128),
        Passage(0, 64, 192),
        Passage(0, 72, 200),
    ]
    with pytest.raises(S3Error):
        make_passages(ranges, passage_tokens=64, stride=128)


@pytest.fixture(scope="module")
def planted():
    words, ranges = _corpus()
    target = ranges[3][1] + 300  # inside doc 3
    words[target] = "xylophone"
    words[ranges[1][1] + 5] = "harbours"  # plural, matched by a singular query through the stemmer
    passages = make_passages(ranges, passage_tokens=64, stride=32)
    return BM25Writer.build(passages, _texts(words, passages)), target, passages


def test_planted_rare_word_found_at_the_right_passage(planted):
    index, target, passages = planted
    hits = index.search("Where is the xylophone?", top_k=5)
    assert hits, "the rare word must be found"
    containing = {p for p in passages if p.start <= target < p.end}
    assert {h.passage for h in hits} == containing  # only passages holding the word score > 0
    assert all(h.terms == ["xylophone"] for h in hits)
    assert hits[0].passage.doc_id == 3
    assert all(hits[i].score >= hits[i + 1].score > 0 for i in range(len(hits) - 1))
    # a common word plus the rare word: the rare word's passages rank first
    mixed = index.search("river xylophone", top_k=len(passages))
    assert {h.passage for h in mixed[: len(containing)]} == containing
    assert set(mixed[0].terms) == {"river", "xylophone"}


def test_stemming_and_empty_queries(planted):
    index, _, _ = planted
    hits = index.search("harbour", top_k=3)
    assert hits and hits[0].passage.doc_id == 1 and hits[0].terms == ["harbour"]
    assert index.search("", top_k=5) == []
    assert index.search("the of and is it", top_k=5) == []  # stopwords only
    assert index.search("quantum", top_k=5) == []  # not in the vocabulary
    assert index.search("xylophone", top_k=0) == []


def test_save_load_roundtrip_and_overwrite(planted, tmp_path):
    index, _, _ = planted
    folder = tmp_path / "bm25"
    index.save(folder)
    index.save(folder)  # replaces the older copy
    for name in (BM25_META, BM25_PASSAGES, BM25_TEXTS):
        assert (folder / name).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bm25"]  # no temp folders left behind
    stored = np.load(folder / BM25_PASSAGES)
    assert stored.dtype == np.int64 and stored.shape == (len(index), 3)
    loaded = BM25Index.load(folder)
    for q in ["xylophone", "river garden music", "harbours engine", "the"]:
        a, b = index.search(q, 7), loaded.search(q, 7)
        assert [(h.passage, h.terms) for h in a] == [(h.passage, h.terms) for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-6)
    with pytest.raises(S3Error):
        BM25Index.load(tmp_path / "missing")


def test_add_rebuilds_with_old_and_new_passages(planted, tmp_path):
    index, target, _ = planted
    new_p = [Passage(7, 5000, 5010)]
    bigger = index.add(new_p, ["a zeppelin over the xylophone"])
    assert len(bigger) == len(index) + 1 and len(index) == bigger.passages_P3.shape[0] - 1
    assert bigger.search("zeppelin", 3)[0].passage == new_p[0]
    assert any(h.passage.start <= target < h.passage.end for h in bigger.search("xylophone", 5))
    bigger.save(tmp_path / "b")
    assert BM25Index.load(tmp_path / "b").search("zeppelin", 1)[0].passage == new_p[0]


def test_degenerate_indexes_and_to_spans(tmp_path):
    empty = BM25Writer.build([], [])
    assert empty.search("anything", 3) == []
    stop_only = BM25Writer.build([Passage(0, 0, 4)], ["the and of it"])
    stop_only.save(tmp_path / "s")
    assert BM25Index.load(tmp_path / "s").search("the", 3) == []
    with pytest.raises(S3Error):
        BM25Writer.build([Passage(0, 0, 4)], [])

    index = BM25Writer.build([Passage(4, 10, 20), Passage(4, 20, 30)], ["red apple tree", "green pear"])
    spans = to_spans(index.search("pear apple", 5))
    assert sorted((s.start, s.end) for s in spans) == [(10, 20), (20, 30)]
    for s in spans:
        assert s.source == "bm25" and s.why["doc_id"] == 4 and s.why["bm25"] == s.score > 0
        assert s.why["terms"] == (["apple"] if s.start == 10 else ["pear"])


def test_term_coverage_weighs_found_terms_by_idf(planted):
    index, _, _ = planted
    full = index.search("xylophone", top_k=1)[0]
    assert full.coverage == pytest.approx(1.0)
    # an absent word counts with the highest IDF: half the weight (or more) is missing
    half = index.search("xylophone zeppelin", top_k=1)[0]
    assert 0.3 < half.coverage <= 0.5
    # a common word found everywhere weighs little next to the rare one it comes with
    mixed = index.search("river xylophone", top_k=1)[0]
    assert mixed.coverage == pytest.approx(1.0)
    only_common = [h for h in index.search("river xylophone", top_k=len(index)) if "xylophone" not in h.terms]
    assert only_common and all(h.coverage < 0.2 for h in only_common)
