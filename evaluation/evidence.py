"""Evidence recall: did a method feed the model the part of the context that holds the answer?

A task's ``Sample.meta["evidence"]`` lists ``[char_start, char_end)`` ranges of ``Sample.context`` (the needle
sentence, the gold passage, the statements of a chain); empty or missing means the sample has no localized
evidence. The harness indexes the context as one document, so the positions of the spans a method feeds are
the document's token positions from 0; ``evidence_token_ranges`` maps each evidence range to those positions,
tokenizing exactly as the index does (``Document.blocks()`` cut, each block tokenized without special
tokens). ``evidence_coverage`` is, per evidence item, the fraction of its tokens inside the fed spans.

An item is *found* when at least ``EVIDENCE_MIN_COVERAGE`` (half) of its tokens are fed: enough of a needle
sentence or passage for a reader to use it, while a span that merely grazes its first or last token is not
counted. ``evidence_recall`` is the fraction of a sample's items found (None without evidence). Unlike the
answer score, it does not depend on how the reader model words its answer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from s3attn import corpus
from s3attn.errors import S3Error

EVIDENCE_MIN_COVERAGE = 0.5

logger = logging.getLogger(__name__)


def token_offsets(tokenizer, context: str, block_chars: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(char starts, char ends) of every token of ``context`` in document order, as the index tokenizes it:
    ``Document.blocks()`` (its default block size, as ``token_blocks`` uses; ``block_chars`` to force
    another), each block without special tokens."""
    if not getattr(tokenizer, "is_fast", False):
        raise S3Error("evidence recall needs a fast tokenizer (character offsets of tokens)")
    doc = corpus.Document("context", Path("context"), "", text=context)
    starts, ends, base = [], [], 0
    for block in doc.blocks(block_chars) if block_chars else doc.blocks():
        enc = tokenizer(block, add_special_tokens=False, return_offsets_mapping=True)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        starts.append(offsets[:, 0] + base)
        ends.append(offsets[:, 1] + base)
        base += len(block)
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(starts), np.concatenate(ends)


def evidence_token_ranges(
    tokenizer, context: str, char_ranges: Sequence[Sequence[int]], block_chars: int | None = None
) -> list[tuple[int, int]]:
    """Token ``[start, end)`` of each ``[char_start, char_end)`` range of ``context``: the tokens that
    overlap it, in the index's positions of the context indexed as one document (``(i, i)`` when no token
    does, e.g. a whitespace-only range)."""
    if not char_ranges:
        return []
    starts, ends = token_offsets(tokenizer, context, block_chars)
    out = []
    for rng in char_ranges:
        a, b = int(rng[0]), int(rng[1])
        if not 0 <= a < b <= len(context):
            raise S3Error(f"evidence range [{a}, {b}) is not inside the context (0..{len(context)})")
        hit = np.flatnonzero((ends > a) & (starts < b) & (ends > starts))
        if hit.size:
            out.append((int(hit[0]), int(hit[-1]) + 1))
        else:
            at = int(np.searchsorted(ends, a, side="right"))
            out.append((at, at))
    return out


def _union(spans: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for s, e in sorted((int(s), int(e)) for s, e in spans if e > s):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def evidence_coverage(ranges: Sequence[Sequence[int]], spans: Sequence[Sequence[int]]) -> list[float]:
    """Per evidence token range, the fraction of its tokens inside the union of the fed ``spans``
    (``[[start, end), ...]``); 0 for an empty range."""
    union = _union(spans)
    out = []
    for a, b in ranges:
        inside = sum(max(0, min(e, b) - max(s, a)) for s, e in union)
        out.append(inside / (b - a) if b > a else 0.0)
    return out


def evidence_recall(coverages: Sequence[float]) -> float | None:
    """Fraction of evidence items found (coverage >= ``EVIDENCE_MIN_COVERAGE``); None without evidence."""
    if not coverages:
        return None
    return sum(1.0 for c in coverages if c >= EVIDENCE_MIN_COVERAGE) / len(coverages)
