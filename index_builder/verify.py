"""Verification of index segments: every invariant of a published segment, each file read whole, damage
reported as one problem line each (never an exception). Used by ``IndexReader.verify`` (``s3-index verify``).

Format 3 adds two checks per list: positions increase within each impact tier (cut by the segment's
``tier_divisors``), and no later tier holds a larger stored activation than an earlier one. Format 4 checks
its documents arrays as the attributes' table was checked before.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import zarr

from s3attn.constants import INDEX_DOCS_ARRAY, INDEX_TOKENS_ARRAY, SEGMENTS_DIR
from s3attn.errors import READ_ERRORS, one_line
from s3attn.index_builder.doc_table import DocColumns
from s3attn.index_builder.meta import SegmentAttrs, SegmentMeta
from s3attn.index_builder.schema import (
    DOC_ARRAYS,
    array_checksum,
    decode_gaps,
    head_array,
    head_group,
    tier_sizes,
)
from s3attn.index_builder.segment_reader import (
    HEAD_ARRAYS,
    act_scale_attr,
    attrs_problems,
    gaps_problems,
    scale_problem,
)


def _check_tables(attrs: SegmentAttrs, entry: SegmentMeta, heads: list[tuple[int, int]], k: int) -> list[str]:
    """The segment's attributes against its manifest entry: range, checksum, documents, postings count."""
    problems = attrs_problems(attrs, entry)
    paths = {INDEX_TOKENS_ARRAY} | {head_array(lay, h, kind) for lay, h in heads for kind in HEAD_ARRAYS}
    paths |= set(DOC_ARRAYS) if attrs.docs is None else set()
    if set(attrs.checksums) != paths:
        problems.append("checksum table does not list exactly the segment's arrays")
    if entry.num_postings != attrs.num_tokens * k * len(heads):
        problems.append(f"num_postings {entry.num_postings} != tokens x k x heads")
    return problems


def _check_groups(seg: zarr.Group, heads: list[tuple[int, int]]) -> list[str]:
    """The metadata of every group inside the segment (``L<layer>`` and ``L<layer>/h<kv>``) and the scales."""
    problems: list[str] = []
    groups = [f"L{layer}" for layer in dict.fromkeys(lay for lay, _ in heads)]
    for where in groups + [head_group(lay, h) for lay, h in heads]:
        try:
            node = seg[where]
        except READ_ERRORS as err:
            problems.append(f"{where}/zarr.json: unreadable ({one_line(err)})")
            continue
        if not isinstance(node, zarr.Group):
            problems.append(f"{where}/zarr.json: not a group")
        elif where not in groups:
            problem = scale_problem(act_scale_attr(node))
            problems += [f"{where}: {problem}"] if problem else []
    return problems


def tier_problems(q: np.ndarray, lens: np.ndarray, divisors: tuple[int, ...]) -> list[str]:
    """Why ``q`` (lists of ``lens`` postings, each in tiers cut by ``divisors``) is not in impact order: in
    some list a later tier holds a larger stored activation than an earlier one."""
    sizes = tier_sizes(lens, divisors).ravel()
    if len(divisors) == 1 or q.size != int(sizes.sum()) or q.size == 0:
        return []
    nz = sizes > 0
    starts = (np.cumsum(sizes) - sizes)[nz]
    qi = q.astype(np.int16)
    hi, lo = np.maximum.reduceat(qi, starts), np.minimum.reduceat(qi, starts)
    feat = np.repeat(np.arange(lens.size), len(divisors))[nz]
    same = feat[1:] == feat[:-1]
    if (lo[:-1][same] < hi[1:][same]).any():
        return ["postings not in impact order (a later tier holds a larger activation)"]
    return []


def _check_head(
    where: str,
    load: Callable[[str], np.ndarray | None],
    n: int,
    num_features: int,
    k: int,
    divisors: tuple[int, ...] = (1,),
) -> list[str]:
    """One (layer, kv head) group ``where``: CSR shape, strictly increasing positions within each tier of a
    list (``divisors``: the segment's tier cuts; (1,): the whole list), impact order, k per token."""
    off, gaps, q = (load(f"{where}/{kind}") for kind in HEAD_ARRAYS)
    if off is None or gaps is None or q is None:
        return []  # reported unreadable by load
    off = off.astype(np.int64)
    lens = np.diff(off)
    if off.shape != (num_features + 1,) or off[0] != 0 or (lens < 0).any() or off[-1] != gaps.size:
        return [f"{where}: offsets are not monotone from 0 to len(pos_gaps)"]
    problems: list[str] = []
    if q.shape != gaps.shape:
        problems.append(f"{where}: act_u8 and pos_gaps differ in length")
    problems += [f"{where}: {p}" for p in tier_problems(q, lens, divisors)]
    sub = tier_sizes(lens, divisors).ravel()
    positions = decode_gaps(gaps, sub)
    problems += [f"{where}: {p}" for p in gaps_problems(gaps, sub, positions, n)]
    if positions.size and int(positions.max()) >= n:
        return problems  # reported; counting would take a bin per position, however far
    bad = int((np.bincount(positions, minlength=n) != k).sum())
    if bad:
        problems.append(f"{where}: {bad} tokens do not hold exactly k={k} postings")
    return problems


def verify_segments_group(root: zarr.Group, expected: bool) -> list[str]:
    """The metadata of the ``segments`` group (readers open each segment by its path, past it); ``expected``:
    the manifest lists segments, so the group must exist."""
    try:
        node = root[SEGMENTS_DIR]
    except KeyError:
        return [f"{SEGMENTS_DIR}/zarr.json: missing"] if expected else []
    except READ_ERRORS as err:
        return [f"{SEGMENTS_DIR}/zarr.json: unreadable ({one_line(err)})"]
    return [] if isinstance(node, zarr.Group) else [f"{SEGMENTS_DIR}/zarr.json: not a group"]


def verify_segment(
    seg: zarr.Group, entry: SegmentMeta, heads: list[tuple[int, int]], num_features: int, k: int
) -> list[str]:
    """Every invariant of one published segment against its manifest ``entry``; one line per problem (a
    damaged file is a problem, never an exception)."""
    try:
        attrs = SegmentAttrs.from_json(seg.attrs.asdict())
    except ValueError as err:
        return [f"segment attributes are malformed ({one_line(err)})"]
    problems = _check_tables(attrs, entry, heads, k) + _check_groups(seg, heads)

    def load(path: str) -> np.ndarray | None:
        try:
            data = np.asarray(seg[path][...])
        except READ_ERRORS as err:
            problems.append(f"{path}: unreadable ({one_line(err)})")
            return None
        if array_checksum(data) != attrs.checksums.get(path):
            problems.append(f"{path}: checksum mismatch")
        return data

    n = attrs.num_tokens
    tokens = load(INDEX_TOKENS_ARRAY)
    if tokens is not None and tokens.shape != (n,):
        problems.append(f"tokens: shape differs from num_tokens={n}")
    for layer, h in heads:
        problems += _check_head(head_group(layer, h), load, n, num_features, k, attrs.tiers)
    if attrs.docs is None:
        problems += _check_docs(load, entry)
    return problems


def _check_docs(load: Callable[[str], np.ndarray | None], entry: SegmentMeta) -> list[str]:
    """Format 4's documents table (``schema.DOC_ARRAYS``) against the manifest entry."""
    table, paths, hashes = (load(name) for name in DOC_ARRAYS)
    if table is None or paths is None or hashes is None:
        return []  # reported unreadable by load
    try:
        cols = DocColumns.stored(table, paths, hashes)
    except ValueError as err:
        return [f"{INDEX_DOCS_ARRAY}: {err}"]
    return [
        f"{INDEX_DOCS_ARRAY}: {p}" for p in cols.problems(entry.token_start, entry.num_tokens, entry.num_docs)
    ]
