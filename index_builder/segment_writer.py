"""Writing one immutable index segment: posting lists built from codes (vectorised), put in impact tiers
batch by batch, and the segment's arrays written into an unpublished group (each naming its chunk layout).

Lists are built in position order (:class:`HeadPostings`); :func:`write_segment_arrays` stores each in impact
tiers (format 3, :func:`tier_batch`), the order ``SegmentAttrs``' defaults record, writing consecutive batches
of lists as they come (:class:`HeadStream`, :class:`ArrayAppender`). Merging adjacent segments streams its
batches the same way (``segment_merge``).

The crash-safe publishing (temp name, rename, manifest) is the indexer's (``indexer``); reading a segment is
``segment_reader``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
import zarr

from s3attn.constants import (
    INDEX_ACT_ARRAY,
    INDEX_DOC_HASHES_ARRAY,
    INDEX_DOC_PATHS_ARRAY,
    INDEX_DOCS_ARRAY,
    INDEX_GAPS_ARRAY,
    INDEX_LAYOUT_ATTR,
    INDEX_OFFSETS_ARRAY,
    INDEX_TOKENS_ARRAY,
)
from s3attn.index_builder.doc_table import DocColumns
from s3attn.index_builder.meta import SegmentAttrs
from s3attn.index_builder.schema import (
    ACT_DTYPE,
    ACT_SCALE_ATTR,
    ARRAY_CHUNKS,
    ARRAY_LAYOUT,
    DOC_DTYPE,
    GAP_DTYPE,
    OFFSET_DTYPE,
    STRINGS_DTYPE,
    TIER_DIVISORS,
    TOKEN_DTYPE,
    DocRecord,
    SegmentData,
    act_scale_of,
    array_checksum,
    compressors,
    crc_hex,
    crc_update,
    decode_gaps,
    encode_gaps,
    head_array,
    head_group,
    quantize_acts,
    tier_sizes,
)


class HeadPostings(NamedTuple):
    """Posting lists of one (layer, kv head) in one segment, as stored."""

    offsets: np.ndarray  # uint64 [F+1]
    pos_gaps: np.ndarray  # uint32 [N]
    act_u8: np.ndarray  # uint8 [N]
    act_scale: float


def _check_no_duplicates(gaps: np.ndarray, offsets: np.ndarray) -> None:
    zero = gaps == 0
    starts = offsets[:-1].astype(np.int64)
    zero[starts[starts < gaps.size]] = False
    if zero.any():
        raise ValueError(
            "codes: a token lists the same feature twice (top-k indices must be distinct per row)"
        )


def build_head_postings(indices_TK: np.ndarray, acts_TK: np.ndarray, num_features: int) -> HeadPostings:
    """feature -> positions lists from top-k codes; row t of the codes is segment-relative token t.

    A stable argsort of the flat feature ids keeps each list in position order (flat index = t * k + j).
    """
    indices_TK = np.asarray(indices_TK)
    acts_TK = np.asarray(acts_TK, dtype=np.float32)
    if indices_TK.ndim != 2 or acts_TK.shape != indices_TK.shape:
        raise ValueError(f"codes: indices {indices_TK.shape} and acts {acts_TK.shape} must both be [T, k]")
    k = indices_TK.shape[1]
    feat = indices_TK.ravel()
    if feat.size and (int(feat.min()) < 0 or int(feat.max()) >= num_features):
        raise ValueError(f"codes: feature ids must lie in [0, {num_features})")
    if not np.all(np.isfinite(acts_TK)):
        raise ValueError("codes: activations must be finite")
    key = feat.astype(np.uint16 if num_features <= 1 << 16 else np.uint32, copy=False)
    order = np.argsort(key, kind="stable")
    counts = np.bincount(key, minlength=num_features)
    offsets = np.zeros(num_features + 1, dtype=OFFSET_DTYPE)
    np.cumsum(counts, out=offsets[1:])
    gaps = encode_gaps(order // k, offsets)
    _check_no_duplicates(gaps, offsets)
    acts = acts_TK.ravel()[order]
    scale = act_scale_of(acts)
    return HeadPostings(offsets, gaps, quantize_acts(acts, scale), scale)


def check_segment_data(
    data: SegmentData, heads: list[tuple[int, int]], k: int, token_start: int
) -> np.ndarray:
    """Validate a segment before building it (it must start at ``token_start``); returns its token ids."""
    token_ids = np.asarray(data.token_ids).ravel()
    n, start = token_ids.size, int(data.token_start)
    if n == 0:
        raise ValueError("add_segment: a segment needs at least one token")
    if start != token_start:
        raise ValueError(f"add_segment: token_start {start} must be {token_start} (end of the index)")
    pos = start
    for d in data.docs:
        if int(d.token_start) != pos or int(d.num_tokens) <= 0:
            raise ValueError(f"add_segment: document {d.path} does not start where the previous one ends")
        pos += int(d.num_tokens)
    if pos != start + n:
        raise ValueError(f"add_segment: documents cover {pos - start} tokens, the segment has {n}")
    if set(data.codes) != set(heads):
        raise ValueError(f"add_segment: codes must hold exactly the (layer, kv head) pairs {heads}")
    for key, (idx, acts) in data.codes.items():
        if np.shape(idx) != (n, k) or np.shape(acts) != (n, k):
            raise ValueError(f"add_segment: codes {key} have shape {np.shape(idx)}, expected {(n, k)}")
    return token_ids


def pick_merge_run(sizes: list[int], m: int) -> tuple[int, int] | None:
    """Tiered policy: tier = floor(log_m(size)); the first ``m`` of the first run of at least ``m`` adjacent
    segments in one tier, as (lo, hi); None when no tier is full."""
    tiers = [int(math.log(max(1, s), m) + 1e-9) for s in sizes]
    i = 0
    while i < len(sizes):
        j = i
        while j < len(sizes) and tiers[j] == tiers[i]:
            j += 1
        if j - i >= m:
            return i, i + m
        i = j
    return None


# ---- impact tiers ----------------------------------------------------------------------------------------
TIER_BITS = 3
"""Bits of a tier number in the sort keys of :func:`tier_batch` (at most 8 tiers)."""
BATCH_POSTINGS = 1 << 20
"""Postings per batch of consecutive lists put in impact tiers (and merged) at once: a build's and a merge's
working memory is a few dozen bytes a posting of one batch, whatever the segment's size. Small batches are
also faster here: on 12.8M postings of one head 1.5 s at 2^20 against 7.1 s at 2^24, whose fresh 100 MB
temporaries this VM backs slowly."""


class HeadStream(NamedTuple):
    """One head's lists as they are written: offsets, the activation scale, and the (pos_gaps, act_u8) of
    consecutive batches of lists in stored order (impact tiers), so a head need not be in memory whole."""

    offsets: np.ndarray  # uint64 [F+1]
    act_scale: float
    pieces: Iterable[tuple[np.ndarray, np.ndarray]]  # (uint32 [n], uint8 [n]) per batch


def pos_bits(num_tokens: int) -> int:
    """Bits of a segment-relative position in a segment of ``num_tokens`` tokens."""
    return max(1, int(num_tokens - 1).bit_length())


def feature_batches(
    offsets: np.ndarray, num_tokens: int, batch: int = BATCH_POSTINGS
) -> Iterator[tuple[int, int]]:
    """Consecutive feature ranges [f0, f1) of about ``batch`` postings each (at least one list; few enough
    lists that :func:`tier_batch`'s keys fit 64 bits)."""
    off = np.asarray(offsets, dtype=np.int64)
    num_f = off.size - 1
    most = 1 << (64 - TIER_BITS - 8 - pos_bits(num_tokens))
    f0 = 0
    while f0 < num_f:
        f1 = int(np.searchsorted(off, off[f0] + batch, side="right")) - 1
        f1 = min(num_f, max(f1, f0 + 1), f0 + most)
        yield f0, f1
        f0 = f1


def tier_batch(
    feat: np.ndarray, positions: np.ndarray, q: np.ndarray, lens: np.ndarray, num_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    """(pos_gaps, act_u8) of consecutive lists in impact tiers (:data:`~s3attn.index_builder.schema.TIER_DIVISORS`):
    postings ranked by q (descending, ties by position) inside their list, cut into tiers at
    ``schema.tier_ends``, tier 0 first, positions increasing within each tier and gap-coded there (the first
    entry of each non-empty tier absolute).

    ``feat`` (list of each posting, counted from the batch's first), ``positions`` (segment-relative, below
    ``num_tokens``) and ``q`` may come in any order; ``lens`` [lists] counts each list's postings. Two sorts of
    packed 64-bit keys: (list, 255 - q, position), then (list, tier, position, q).
    """
    p = pos_bits(num_tokens)
    u64 = np.uint64
    key = feat.astype(u64) << u64(8 + p)
    key |= (255 - q.astype(u64)) << u64(p)
    key |= positions.astype(u64)
    key.sort()  # list by list, in rank order
    sub = tier_sizes(lens, TIER_DIVISORS)  # [lists, tiers]
    q_rank = 255 - ((key >> u64(p)) & u64(255))
    key &= u64((1 << p) - 1)
    key <<= u64(8)
    key |= q_rank
    group = np.repeat(np.arange(sub.size, dtype=u64), sub.ravel())  # list * tiers + tier, in rank order
    feat_of, tier_of = np.divmod(group, u64(len(TIER_DIVISORS)))
    key |= (feat_of << u64(TIER_BITS + p + 8)) | (tier_of << u64(p + 8))
    key.sort()
    sub_off = np.zeros(sub.size + 1, dtype=np.int64)
    np.cumsum(sub.ravel(), out=sub_off[1:])
    return encode_gaps((key >> u64(8)) & u64((1 << p) - 1), sub_off), (key & u64(255)).astype(ACT_DTYPE)


def impact_stream(hp: HeadPostings, num_tokens: int, batch: int = BATCH_POSTINGS) -> HeadStream:
    """``hp`` (lists in position order, positions below ``num_tokens``) as it is stored: in impact tiers
    (:func:`tier_batch`), batch by batch."""
    off = hp.offsets.astype(np.int64)

    def pieces() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for f0, f1 in feature_batches(off, num_tokens, batch):
            a, b = int(off[f0]), int(off[f1])
            lens = np.diff(off[f0 : f1 + 1])
            positions = decode_gaps(hp.pos_gaps[a:b], lens)
            feat = np.repeat(np.arange(f1 - f0, dtype=np.int64), lens)
            yield tier_batch(feat, positions, hp.act_u8[a:b], lens, num_tokens)

    return HeadStream(hp.offsets, hp.act_scale, pieces())


def impact_order(hp: HeadPostings, num_tokens: int | None = None) -> HeadPostings:
    """``hp`` with each list stored in impact tiers (:func:`impact_stream`), whole; offsets unchanged."""
    if hp.pos_gaps.size == 0:
        return hp
    if num_tokens is None:
        lens = np.diff(hp.offsets.astype(np.int64))
        num_tokens = int(decode_gaps(hp.pos_gaps, lens).max()) + 1
    parts = list(impact_stream(hp, num_tokens).pieces)
    gaps, q = (np.concatenate(x) for x in zip(*parts))
    return HeadPostings(hp.offsets, gaps, q, hp.act_scale)


# ---- writing ---------------------------------------------------------------------------------------------
def _create_array(group: zarr.Group, name: str, shape: int, dtype: np.dtype, kind: str) -> zarr.Array:
    """Create ``name`` (``shape`` entries) under ``group`` in the chunks (and shard files) of its ``kind``
    (:data:`~s3attn.index_builder.schema.ARRAY_CHUNKS`), its layout named in its attributes."""
    chunk, shard = ARRAY_CHUNKS[kind]
    chunk = max(1, min(chunk or shape, shape))
    shards = (max(chunk, min(shard, -(-shape // chunk) * chunk)),) if shard else None
    return group.create_array(
        name,
        shape=(shape,),
        dtype=dtype,
        chunks=(chunk,),
        shards=shards,
        compressors=compressors(kind),
        fill_value=0,
        attributes={INDEX_LAYOUT_ATTR: ARRAY_LAYOUT[kind]},
    )


class ArrayAppender:
    """Writes a created array piece by piece in whole shard files (or chunks, unsharded), so no file is
    written twice; keeps the crc32 of what it wrote (``schema.array_checksum`` of the whole)."""

    def __init__(self, arr: zarr.Array) -> None:
        self.arr = arr
        self.block = int((arr.shards or arr.chunks)[0])
        self.at, self.held, self.crc = 0, 0, 0
        self.parts: list[np.ndarray] = []

    def add(self, data: np.ndarray) -> None:
        data = np.ascontiguousarray(data, dtype=self.arr.dtype)
        if self.at + self.held + data.size > self.arr.shape[0]:
            raise ValueError(f"{self.arr.path}: more entries than the array's {self.arr.shape[0]}")
        self.crc = crc_update(self.crc, data)
        self.parts.append(data)
        self.held += data.size
        if self.held >= self.block:
            self._flush(self.held // self.block * self.block)

    def _flush(self, m: int) -> None:
        buf = np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]
        self.arr[self.at : self.at + m] = buf[:m]
        self.at += m
        self.parts = [buf[m:].copy()] if m < buf.size else []  # not a view that keeps all of buf
        self.held = buf.size - m

    def close(self) -> str:
        """Write what is held; the checksum. ValueError if the pieces did not fill the array."""
        if self.held:
            self._flush(self.held)
        if self.at != self.arr.shape[0]:
            raise ValueError(f"{self.arr.path}: {self.at} entries written, the array has {self.arr.shape[0]}")
        return crc_hex(self.crc)


def _write_array(group: zarr.Group, name: str, data: np.ndarray, kind: str) -> str:
    """Create ``name`` in the layout of its ``kind`` (:func:`_create_array`) and write ``data`` whole;
    return its checksum."""
    arr = _create_array(group, name, data.shape[0], data.dtype, kind)
    if data.size:
        arr[...] = data
    return array_checksum(data)


def write_doc_arrays(seg: zarr.Group, docs: DocColumns) -> dict[str, str]:
    """Write a segment's documents table (format 4: ``docs`` int64 [3D], ``doc_paths``, ``doc_hashes``),
    replacing what is there; returns ``{array path: checksum}``."""
    data = {
        INDEX_DOCS_ARRAY: docs.table_D3.astype(DOC_DTYPE).ravel(),
        INDEX_DOC_PATHS_ARRAY: docs.paths.astype(STRINGS_DTYPE),
        INDEX_DOC_HASHES_ARRAY: docs.hashes.astype(STRINGS_DTYPE),  # type: ignore[union-attr]
    }
    for name in data:
        if name in seg:
            del seg[name]
    return {name: _write_array(seg, name, arr, name) for name, arr in data.items()}


def rebase_segment(seg: zarr.Group, docs: Iterable[DocRecord], token_start: int) -> dict[str, str]:
    """Rewrite an unpublished segment's attributes for a new ``token_start`` and its rebased documents
    ``docs`` (format 4: its documents arrays rewritten); returns its checksums."""
    attrs = SegmentAttrs.from_json(seg.attrs.asdict())
    table = tuple(docs)
    sums = dict(attrs.checksums)
    if attrs.docs is None:  # format 4: the table is arrays
        sums |= write_doc_arrays(seg, DocColumns.of(table))
    kept = None if attrs.docs is None else table
    seg.attrs.update(dataclasses.replace(attrs, token_start=token_start, docs=kept, checksums=sums).to_json())
    return sums


def write_segment_arrays(
    seg: zarr.Group,
    token_ids: np.ndarray,
    heads: Iterable[tuple[tuple[int, int], HeadPostings | HeadStream]],
    docs: DocColumns,
) -> dict[str, str]:
    """Write ``tokens``, the documents table (:func:`write_doc_arrays`) and every head's three arrays into an
    (unpublished) segment group, each list in impact tiers (formats 3 and 4): a :class:`HeadPostings` (lists
    in position order) is put in tiers here (:func:`impact_stream`), a :class:`HeadStream` is written as it
    comes, batch by batch.

    ``heads`` may be a generator so only one head (or one batch of one) is in memory at a time. Returns
    ``{array path relative to the segment: checksum}``.
    """
    num_tokens = int(token_ids.size)
    sums = {
        INDEX_TOKENS_ARRAY: _write_array(
            seg, INDEX_TOKENS_ARRAY, token_ids.astype(TOKEN_DTYPE), INDEX_TOKENS_ARRAY
        )
    }
    sums |= write_doc_arrays(seg, docs)
    for (layer, kv), head in heads:
        stream = head if isinstance(head, HeadStream) else impact_stream(head, num_tokens)
        seg.create_group(head_group(layer, kv), attributes={ACT_SCALE_ATTR: float(stream.act_scale)})
        path = head_array(layer, kv, INDEX_OFFSETS_ARRAY)
        offsets = np.asarray(stream.offsets).astype(OFFSET_DTYPE)
        sums[path] = _write_array(seg, path, offsets, INDEX_OFFSETS_ARRAY)
        n = int(offsets[-1])
        out = {
            kind: ArrayAppender(_create_array(seg, head_array(layer, kv, kind), n, dtype, kind))
            for kind, dtype in ((INDEX_GAPS_ARRAY, GAP_DTYPE), (INDEX_ACT_ARRAY, ACT_DTYPE))
        }
        for gaps, q in stream.pieces:
            out[INDEX_GAPS_ARRAY].add(gaps)
            out[INDEX_ACT_ARRAY].add(q)
        for kind, appender in out.items():
            sums[head_array(layer, kv, kind)] = appender.close()
    return sums
