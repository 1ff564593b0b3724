"""Evidence recall: char ranges -> the index's token positions (checked against the ids the index builds
from, ``Document.token_blocks``), coverage by fed spans, and the found/not-found threshold."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import filler_words, tiny_tokenizer

from s3attn.corpus import Document
from s3attn.errors import S3Error
from s3attn.evaluation.evidence import (
    EVIDENCE_MIN_COVERAGE,
    evidence_coverage,
    evidence_recall,
    evidence_token_ranges,
)

NEEDLE = "the queen of paris is old"


def _context(n_before: int = 60, n_after: int = 40) -> tuple[str, list[int]]:
    before, after = filler_words(n_before, 1), filler_words(n_after, 2)
    context = f"{before} {NEEDLE}. {after}"
    start = context.index(NEEDLE)
    return context, [start, start + len(NEEDLE)]


def _index_ids(tok, context: str) -> list[int]:
    """The ids the index builds from: the context as one document, ``token_blocks``."""
    doc = Document("ctx.txt", Path("ctx.txt"), "", text=context)
    return [i for block in doc.token_blocks(tok) for i in block]


def _check_decodes(tok, context: str, char_range: list[int], token_range: tuple[int, int]) -> None:
    ids = _index_ids(tok, context)
    s, e = token_range
    assert 0 <= s < e <= len(ids)
    text = " ".join(tok.decode(ids[s:e]).split())
    assert " ".join(context[char_range[0] : char_range[1]].split()) in text
    # tight: dropping the first or last token loses part of the evidence
    for inner in (ids[s + 1 : e], ids[s : e - 1]):
        assert " ".join(context[char_range[0] : char_range[1]].split()) not in " ".join(
            tok.decode(inner).split()
        )


def test_token_ranges_match_the_index_ids():
    tok = tiny_tokenizer()
    context, rng = _context()
    ranges = evidence_token_ranges(tok, context, [rng])
    assert len(ranges) == 1 and ranges[0][1] - ranges[0][0] == len(NEEDLE.split())
    _check_decodes(tok, context, rng, ranges[0])
    assert evidence_token_ranges(tok, context, []) == []


def test_token_ranges_across_block_boundaries(monkeypatch):
    """Small blocks (as the index cuts a huge document): the positions still match the index's ids,
    for evidence inside a later block and evidence that spans a cut."""
    tok = tiny_tokenizer()
    context, rng = _context(n_before=30, n_after=30)
    monkeypatch.setattr(Document.blocks, "__defaults__", (37,))
    blocks = list(Document("c", Path("c"), "", text=context).blocks())
    assert len(blocks) > 5
    cuts = [sum(len(b) for b in blocks[: i + 1]) for i in range(len(blocks) - 1)]
    assert any(rng[0] < c < rng[1] for c in cuts), "the needle crosses a block cut"
    ranges = evidence_token_ranges(tok, context, [rng])
    _check_decodes(tok, context, rng, ranges[0])
    late = [len(context) - 20, len(context) - 1]
    _check_decodes(tok, context, late, evidence_token_ranges(tok, context, [late])[0])


def test_token_ranges_with_a_byte_level_bpe(monkeypatch):
    """SmolLM2's tokenizer (leading-space tokens, offsets with spaces): same checks, small blocks."""
    from s3attn.models.loading import smollm2_cache_dir

    folder = smollm2_cache_dir()
    if not (folder / "tokenizer.json").is_file():
        pytest.skip("SmolLM2 tokenizer not cached")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    context = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 6) + (
        "The special magic number for Paris is 7264. " + "Sed do eiusmod tempor incididunt. " * 5
    )
    start = context.index("The special")
    rng = [start, context.index("7264") + 4]
    monkeypatch.setattr(Document.blocks, "__defaults__", (50,))
    ranges = evidence_token_ranges(tok, context, [rng])
    ids = _index_ids(tok, context)
    assert context[rng[0] : rng[1]] in tok.decode(ids[ranges[0][0] : ranges[0][1]])


def test_bad_ranges_are_refused():
    tok = tiny_tokenizer()
    with pytest.raises(S3Error, match="not inside the context"):
        evidence_token_ranges(tok, "the king", [[3, 99]])
    with pytest.raises(S3Error, match="not inside the context"):
        evidence_token_ranges(tok, "the king", [[5, 5]])


def test_coverage_and_recall():
    ranges = [(10, 20), (30, 34), (50, 52)]
    spans = [[0, 15], [14, 16], [31, 40]]  # overlapping spans count once
    assert evidence_coverage(ranges, spans) == [0.6, 0.75, 0.0]
    assert evidence_coverage(ranges, []) == [0.0, 0.0, 0.0]
    assert evidence_coverage([(5, 5)], [[0, 10]]) == [0.0]
    assert evidence_recall([0.6, 0.75, 0.0]) == pytest.approx(2 / 3)
    assert evidence_recall([EVIDENCE_MIN_COVERAGE, 0.49]) == 0.5
    assert evidence_recall([]) is None
