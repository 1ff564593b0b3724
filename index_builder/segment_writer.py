"""Writing one immutable index segment: posting lists built from codes (vectorised) or merged from adjacent
segments, and the segment's arrays written into an unpublished group (each naming its chunk layout).

Lists are built and merged in position order (:class:`HeadPostings`); :func:`write_segment_arrays` stores
each in impact tiers (format 3, :func:`impact_order`), the order ``SegmentAttrs``' defaults record. A merge
reads segments of any format back in position order (``SegmentReader.read_head``), so it converts them.

The crash-safe publishing (temp name, rename, manifest) is the indexer's (``indexer``); reading a segment is
``segment_reader``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
import zarr

from s3attn.constants import (
    INDEX_ACT_ARRAY,
    INDEX_GAPS_ARRAY,
    INDEX_LAYOUT_ATTR,
    INDEX_OFFSETS_ARRAY,
    INDEX_TOKENS_ARRAY,
)
from s3attn.index_builder.schema import (
    ACT_DTYPE,
    ACT_SCALE_ATTR,
    ARRAY_CHUNKS,
    ARRAY_LAYOUT,
    GAP_DTYPE,
    OFFSET_DTYPE,
    TIER_DIVISORS,
    TOKEN_DTYPE,
    SegmentData,
    act_scale_of,
    array_checksum,
    compressors,
    concat_ranges,
    decode_gaps,
    dequantize_acts,
    encode_gaps,
    head_array,
    head_group,
    quantize_acts,
    tier_ends,
)
from s3attn.index_builder.segment_reader import SegmentReader


class HeadPostings(NamedTuple):
    """Posting lists of one (layer, kv head) in one segment, as stored."""

    offsets: np.ndarray  # uint64 [F+1]
    pos_gaps: np.ndarray  # uint32 [N]
    act_u8: np.ndarray  # uint8 [N]
    act_scale: float


class HeadPart(NamedTuple):
    """Decoded posting lists of one segment, input of ``merge_head_postings``."""

    offsets: np.ndarray  # uint64 [F+1]
    positions: np.ndarray  # int64 [N], relative to the MERGED segment's token_start
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


def merge_head_postings(parts: list[HeadPart]) -> HeadPostings:
    """Concatenate per-feature lists of adjacent segments (given in token order) into one CSR.

    Positions stay identical; activations of a part whose scale is below the merged max are re-quantized.
    """
    lens_SF = np.stack([np.diff(p.offsets.astype(np.int64)) for p in parts])
    new_off = np.zeros(lens_SF.shape[1] + 1, dtype=np.int64)
    np.cumsum(lens_SF.sum(axis=0), out=new_off[1:])
    prior_SF = np.cumsum(lens_SF, axis=0) - lens_SF
    total = int(new_off[-1])
    scale = max(p.act_scale for p in parts)
    out_pos = np.empty(total, dtype=np.int64)
    out_q = np.empty(total, dtype=ACT_DTYPE)
    for s, part in enumerate(parts):
        dest = concat_ranges(new_off[:-1] + prior_SF[s], lens_SF[s])
        out_pos[dest] = part.positions
        q = part.act_u8
        if part.act_scale != scale:
            q = quantize_acts(dequantize_acts(q, part.act_scale), scale)
        out_q[dest] = q
    offsets = new_off.astype(OFFSET_DTYPE)
    return HeadPostings(offsets, encode_gaps(out_pos, offsets), out_q, float(scale))


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


def impact_order(hp: HeadPostings, divisors: tuple[int, ...] = TIER_DIVISORS) -> HeadPostings:
    """``hp`` (lists in position order) with each list stored in impact tiers: its postings ranked by q
    (descending, ties by position), cut into tiers at ``schema.tier_ends``, tier 0 first, positions increasing
    within each tier and gap-coded there (the first entry of each non-empty tier absolute). Offsets unchanged."""
    off = hp.offsets.astype(np.int64)
    lens = np.diff(off)
    n = int(off[-1])
    if n == 0 or len(divisors) == 1:
        return hp
    positions = decode_gaps(hp.pos_gaps, lens)
    feat = np.repeat(np.arange(lens.size, dtype=np.int64), lens)
    by_impact = np.argsort(feat * 256 + (255 - hp.act_u8.astype(np.int64)), kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[by_impact] = np.arange(n, dtype=np.int64) - off[feat[by_impact]]  # rank inside its own list
    ends = tier_ends(lens, divisors)
    tier = np.zeros(n, dtype=np.int64)
    for t in range(len(divisors) - 1):
        tier += rank >= ends[feat, t]
    order = np.argsort(feat * len(divisors) + tier, kind="stable")  # stable: positions stay increasing
    sub_off = np.zeros(ends.size + 1, dtype=np.int64)
    np.cumsum(np.diff(ends, axis=1, prepend=0).ravel(), out=sub_off[1:])
    return HeadPostings(hp.offsets, encode_gaps(positions[order], sub_off), hp.act_u8[order], hp.act_scale)


# ---- writing ---------------------------------------------------------------------------------------------
def _write_array(group: zarr.Group, name: str, data: np.ndarray, kind: str) -> str:
    """Create ``name`` under ``group`` in the chunks (and shard files) of its ``kind``
    (:data:`~s3attn.index_builder.schema.ARRAY_CHUNKS`), its layout named in its attributes, and write it
    whole (one call); return its checksum."""
    chunk, shard = ARRAY_CHUNKS[kind]
    chunk = max(1, min(chunk or data.shape[0], data.shape[0]))
    shards = (max(chunk, min(shard, -(-data.shape[0] // chunk) * chunk)),) if shard else None
    arr = group.create_array(
        name,
        shape=data.shape,
        dtype=data.dtype,
        chunks=(chunk,),
        shards=shards,
        compressors=compressors(kind),
        fill_value=0,
        attributes={INDEX_LAYOUT_ATTR: ARRAY_LAYOUT[kind]},
    )
    if data.size:
        arr[...] = data
    return array_checksum(data)


def write_segment_arrays(
    seg: zarr.Group, token_ids: np.ndarray, heads: Iterable[tuple[tuple[int, int], HeadPostings]]
) -> dict[str, str]:
    """Write ``tokens`` and every head's three arrays into an (unpublished) segment group, each list in
    impact tiers (:func:`impact_order`, format 3).

    ``heads`` (lists in position order) may be a generator so only one head's postings are in memory at a
    time. Returns ``{array path relative to the segment: checksum}``.
    """
    sums = {
        INDEX_TOKENS_ARRAY: _write_array(
            seg, INDEX_TOKENS_ARRAY, token_ids.astype(TOKEN_DTYPE), INDEX_TOKENS_ARRAY
        )
    }
    for (layer, kv), ordered in heads:
        hp = impact_order(ordered)
        seg.create_group(head_group(layer, kv), attributes={ACT_SCALE_ATTR: float(hp.act_scale)})
        for kind, data in (
            (INDEX_OFFSETS_ARRAY, hp.offsets.astype(OFFSET_DTYPE)),
            (INDEX_GAPS_ARRAY, hp.pos_gaps.astype(GAP_DTYPE)),
            (INDEX_ACT_ARRAY, hp.act_u8.astype(ACT_DTYPE)),
        ):
            path = head_array(layer, kv, kind)
            sums[path] = _write_array(seg, path, data, kind)
    return sums


def merged_heads(
    readers: list[SegmentReader], heads: list[tuple[int, int]]
) -> Iterator[tuple[tuple[int, int], HeadPostings]]:
    """Yield ((layer, kv), merged HeadPostings) for adjacent segments, one head in memory at a time."""
    start = readers[0].token_start
    for key in heads:
        parts = []
        for r in readers:
            off, pos, q, scale = r.read_head(*key)
            parts.append(HeadPart(off, pos + (r.token_start - start), q, scale))
        yield key, merge_head_postings(parts)
