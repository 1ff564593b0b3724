"""Document filters: ``Retriever.retrieve(..., documents=GLOBS)`` (``s3-index ask --documents GLOB``).

A filter is a glob or a list of globs (``fnmatch``: ``*``, ``?``, ``[seq]``; ``*`` also matches ``/``) on
the document path as the index records it (``s3-index info`` / ``--show-spans`` show them). Retrieval then
only sees the documents whose path matches one of the globs: BM25 passages of other documents are dropped,
S3 scores outside the matching documents' tokens are zeroed (the touched tokens are checked against the
documents' sorted ranges, ``Scope.ranges``, before and after smoothing, so no peak or span starts there),
the hybrid bias spans are the first tokens of the first matching document and the last
tokens of the last one, and ``full`` is the matching documents' text, middle-truncated. A filter that
matches no document is a one-line S3Error naming it (not an empty answer).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import NamedTuple

from s3attn.errors import S3Error
from s3attn.retrieval.spans import SOURCE_BIAS, Span

Documents = str | Sequence[str] | None  # the ``documents`` argument of ``retrieve``


class Scope(NamedTuple):
    """The documents a filtered question may retrieve from."""

    ranges: list[tuple[int, int]]  # (start, end) global token ranges of the matching documents, sorted
    doc_ids: frozenset[int]  # their doc ids


def globs_of(documents: Documents) -> tuple[str, ...]:
    """``documents`` as a tuple of globs (empty: no filter)."""
    if documents is None:
        return ()
    globs = (documents,) if isinstance(documents, str) else tuple(documents)
    for g in globs:
        if not isinstance(g, str) or not g.strip():
            raise S3Error(f"--documents {g!r}: give a non-empty glob on the document path, e.g. 'notes/*.md'")
    return globs


def scope_of(documents: Documents, doc_table: list[tuple[int, str, int, int]]) -> Scope | None:
    """The Scope of ``documents`` over ``doc_table`` ((doc_id, path, start, end), sorted by start), None
    when there is no filter; a one-line S3Error when no document matches."""
    globs = globs_of(documents)
    if not globs:
        return None
    rows = [r for r in doc_table if any(fnmatch.fnmatch(r[1], g) for g in globs)]
    if not rows:
        example = f", e.g. {doc_table[0][1]!r}" if doc_table else ""
        raise S3Error(
            f"--documents {','.join(globs)}: matches none of the index's {len(doc_table)} document paths"
            f"{example}; give a glob on the path"
        )
    return Scope([(s, e) for _, _, s, e in rows], frozenset(d for d, _, _, _ in rows))


def edge_bias(ranges: list[tuple[int, int]], first: int, last: int) -> list[Span]:
    """Hybrid's bias spans inside a filter: the first ``first`` tokens of the first range and the last
    ``last`` tokens of the last range (each clipped to its document; one span when they overlap)."""
    (s0, e0), (s1, e1) = ranges[0], ranges[-1]
    f_end = min(e0, s0 + max(first, 0))
    l_start = max(s1, e1 - max(last, 0))
    out = []
    if f_end > s0:
        out.append(Span(s0, f_end, 0.0, SOURCE_BIAS, {"bias": "first", "doc": 0}))
    if l_start < e1 and e1 > f_end:  # not inside the first span
        out.append(Span(l_start, e1, 0.0, SOURCE_BIAS, {"bias": "last", "doc": 0}))
    return out


def head_tail(ranges: list[tuple[int, int]], budget: int) -> list[Span]:
    """``full`` over ``ranges``: all of them when they fit ``budget``, else the first ``budget // 2`` and
    the last ``budget - budget // 2`` tokens of their concatenation (the middle is cut, as LongBench does)."""
    total = sum(e - s for s, e in ranges)
    if total <= budget:
        return [Span(s, e, 1.0, "full", {}) for s, e in ranges]
    why = {"truncated": "middle"}
    out: list[Span] = []
    left = budget // 2
    for s, e in ranges:  # the head
        if left <= 0:
            break
        out.append(Span(s, min(e, s + left), 1.0, "full", dict(why)))
        left -= out[-1].length
    tail: list[Span] = []
    left = budget - budget // 2
    for s, e in reversed(ranges):  # the tail
        if left <= 0:
            break
        tail.append(Span(max(s, e - left), e, 1.0, "full", dict(why)))
        left -= tail[-1].length
    return out + tail[::-1]
