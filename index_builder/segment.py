"""One immutable index segment: build its posting lists from codes (vectorised), write it, read it back.

A segment holds the tokens ``[token_start, token_start + T)`` and, per (layer, kv head), CSR posting lists
``feature -> sorted segment-relative positions`` (see ``schema``). Everything here is numpy + zarr; the
crash-safe publishing (temp name, rename, manifest) lives in ``store``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
import zarr

from s3attn.constants import INDEX_ACT_ARRAY, INDEX_GAPS_ARRAY, INDEX_OFFSETS_ARRAY, INDEX_TOKENS_ARRAY
from s3attn.index_builder.chunks import ChunkReader
from s3attn.index_builder.schema import (
    ACT_CHUNK,
    ACT_DTYPE,
    GAP_CHUNK,
    GAP_DTYPE,
    GAP_SHARD,
    OFFSET_DTYPE,
    TOKEN_CHUNK,
    TOKEN_DTYPE,
    DocRecord,
    Postings,
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
    segment_checksum,
)


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


# ---- writing ---------------------------------------------------------------------------------------------
def _write_array(
    group: zarr.Group, name: str, data: np.ndarray, kind: str, chunk: int, shard: int = 0
) -> str:
    """Create ``name`` under ``group`` (chunks of ``chunk`` entries, in shard files of ``shard`` entries if
    given) and write it whole (one call); return its checksum."""
    chunk = max(1, min(chunk, data.shape[0]))
    shards = (max(chunk, min(shard, -(-data.shape[0] // chunk) * chunk)),) if shard else None
    arr = group.create_array(
        name,
        shape=data.shape,
        dtype=data.dtype,
        chunks=(chunk,),
        shards=shards,
        compressors=compressors(kind),
        fill_value=0,
    )
    if data.size:
        arr[...] = data
    return array_checksum(data)


def write_segment_arrays(
    seg: zarr.Group, token_ids: np.ndarray, heads: Iterable[tuple[tuple[int, int], HeadPostings]]
) -> dict[str, str]:
    """Write ``tokens`` and every head's three arrays into an (unpublished) segment group.

    ``heads`` may be a generator so only one head's postings are in memory at a time. Returns
    ``{array path relative to the segment: checksum}``.
    """
    sums = {
        INDEX_TOKENS_ARRAY: _write_array(
            seg, INDEX_TOKENS_ARRAY, token_ids.astype(TOKEN_DTYPE), INDEX_TOKENS_ARRAY, TOKEN_CHUNK
        )
    }
    for (layer, kv), hp in heads:
        seg.create_group(head_group(layer, kv), attributes={"act_scale": float(hp.act_scale)})
        nf = hp.offsets.shape[0]
        for kind, data, chunk, shard in (
            (INDEX_OFFSETS_ARRAY, hp.offsets.astype(OFFSET_DTYPE), nf, 0),
            (INDEX_GAPS_ARRAY, hp.pos_gaps.astype(GAP_DTYPE), GAP_CHUNK, GAP_SHARD),
            (INDEX_ACT_ARRAY, hp.act_u8.astype(ACT_DTYPE), ACT_CHUNK, 0),
        ):
            path = head_array(layer, kv, kind)
            sums[path] = _write_array(seg, path, data, kind, chunk, shard)
    return sums


# ---- reading ---------------------------------------------------------------------------------------------
class SegmentReader:
    """Read access to one published segment; array handles, offsets and scales are cached (segments are
    immutable)."""

    def __init__(self, seg: zarr.Group, token_start: int, num_tokens: int) -> None:
        self.group = seg
        self.token_start = int(token_start)
        self.num_tokens = int(num_tokens)
        self._arrays: dict[str, zarr.Array] = {}
        self._offsets: dict[tuple[int, int], np.ndarray] = {}
        self._scales: dict[tuple[int, int], float] = {}
        self._docs: list[DocRecord] | None = None

    def docs(self) -> list[DocRecord]:
        """The segment's documents table (global token_start), cached."""
        if self._docs is None:
            self._docs = [DocRecord(**d) for d in self.group.attrs["docs"]]
        return self._docs

    def array(self, path: str) -> zarr.Array:
        arr = self._arrays.get(path)
        if arr is None:
            arr = self.group[path]
            if not isinstance(arr, zarr.Array):
                raise ValueError(f"{path} is not an array")
            self._arrays[path] = arr
        return arr

    def offsets(self, layer: int, kv: int) -> np.ndarray:
        """CSR offsets as int64 [F+1] (cached in RAM)."""
        off = self._offsets.get((layer, kv))
        if off is None:
            off = np.asarray(self.array(head_array(layer, kv, INDEX_OFFSETS_ARRAY))[...]).astype(np.int64)
            self._offsets[(layer, kv)] = off
        return off

    def act_scale(self, layer: int, kv: int) -> float:
        s = self._scales.get((layer, kv))
        if s is None:
            s = float(self.group[head_group(layer, kv)].attrs["act_scale"])
            self._scales[(layer, kv)] = s
        return s

    def tokens(self, start: int, end: int) -> np.ndarray:
        """Token ids of segment-relative range [start, end)."""
        return np.asarray(self.array(INDEX_TOKENS_ARRAY)[start:end], dtype=TOKEN_DTYPE)

    def read_head(self, layer: int, kv: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Whole head: (offsets uint64 as stored, positions int64 relative, q uint8, act_scale)."""
        off = np.asarray(self.array(head_array(layer, kv, INDEX_OFFSETS_ARRAY))[...])
        gaps = np.asarray(self.array(head_array(layer, kv, INDEX_GAPS_ARRAY))[...])
        q = np.asarray(self.array(head_array(layer, kv, INDEX_ACT_ARRAY))[...])
        lens = np.diff(off.astype(np.int64))
        if lens.size and (lens.min() < 0 or int(off[-1]) != gaps.size):
            raise ValueError("offsets do not describe pos_gaps")
        return off, decode_gaps(gaps, lens), q, self.act_scale(layer, kv)


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


def read_postings(
    readers: list[SegmentReader], layer: int, kv: int, features: np.ndarray, chunks: ChunkReader
) -> Postings:
    """Posting lists of ``features`` (int64, any order, repeats allowed) over ``readers`` (token order).

    Per segment the lists are read in slot order (whole chunks, see :mod:`chunks`), gaps decoded by one
    cumulative sum; output slot-major, so every slot's list is in global position order. One segment needs
    no reordering at all; several are interleaved by one scatter.
    """
    features = np.asarray(features, dtype=np.int64)
    n_slots = features.size
    parts = []
    for r in readers:
        off = r.offsets(layer, kv)
        lens = off[features + 1] - off[features]
        if not lens.sum():
            continue
        gaps = chunks.read(r.array(head_array(layer, kv, INDEX_GAPS_ARRAY)), off[features], lens)
        q = chunks.read(r.array(head_array(layer, kv, INDEX_ACT_ARRAY)), off[features], lens)
        positions = decode_gaps(gaps, lens)
        positions += r.token_start
        parts.append((lens, positions, dequantize_acts(q, r.act_scale(layer, kv))))
    if not parts:
        return Postings(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
    lens_SJ = np.stack([p[0] for p in parts])
    slots = np.repeat(np.arange(n_slots, dtype=np.int32), lens_SJ.sum(axis=0))
    if len(parts) == 1:
        return Postings(parts[0][1], slots, parts[0][2])
    flat = lens_SJ.T.ravel()
    start_JS = (np.cumsum(flat) - flat).reshape(n_slots, len(parts))
    total = int(lens_SJ.sum())
    positions = np.empty(total, dtype=np.int64)
    acts = np.empty(total, dtype=np.float32)
    for s, (lens, pos, act) in enumerate(parts):
        dest = concat_ranges(start_JS[:, s], lens)
        positions[dest] = pos
        acts[dest] = act
    return Postings(positions, slots, acts)


# ---- verification ----------------------------------------------------------------------------------------
def verify_segment(
    seg: zarr.Group, entry: dict, heads: list[tuple[int, int]], num_features: int, k: int
) -> list[str]:
    """Every invariant of one published segment against its manifest ``entry``; one line per problem."""
    problems: list[str] = []
    attrs = seg.attrs.asdict()
    start, n = attrs.get("token_start"), int(attrs.get("num_tokens", -1))
    if start != entry["token_start"] or n != entry["num_tokens"]:
        problems.append("token_start/num_tokens differ from the manifest")
    sums = attrs.get("checksums") or {}
    if segment_checksum(sums, start, n) != entry["checksum"]:
        problems.append("checksum table does not match the manifest")
    docs = attrs.get("docs") or []
    if len(docs) != entry["num_docs"]:
        problems.append(f"{len(docs)} documents, the manifest says {entry['num_docs']}")
    pos = start
    for d in docs:
        if d["token_start"] != pos or d["num_tokens"] <= 0:
            problems.append(f"document {d['path']} does not start where the previous one ends")
            break
        pos += d["num_tokens"]
    if pos != start + n:
        problems.append(f"documents cover {pos - start} tokens, the segment has {n}")
    paths = {INDEX_TOKENS_ARRAY} | {
        head_array(lay, h, kind)
        for lay, h in heads
        for kind in (INDEX_OFFSETS_ARRAY, INDEX_GAPS_ARRAY, INDEX_ACT_ARRAY)
    }
    if set(sums) != paths:
        problems.append("checksum table does not list exactly the segment's arrays")
    if entry.get("num_postings") != n * k * len(heads):
        problems.append(f"num_postings {entry.get('num_postings')} != tokens x k x heads")

    def load(path: str) -> np.ndarray:
        data = np.asarray(seg[path][...])
        if array_checksum(data) != sums.get(path):
            problems.append(f"{path}: checksum mismatch")
        return data

    if load(INDEX_TOKENS_ARRAY).shape != (n,):
        problems.append(f"tokens: shape differs from num_tokens={n}")
    for layer, h in heads:
        where = head_group(layer, h)
        off = load(head_array(layer, h, INDEX_OFFSETS_ARRAY)).astype(np.int64)
        gaps = load(head_array(layer, h, INDEX_GAPS_ARRAY))
        q = load(head_array(layer, h, INDEX_ACT_ARRAY))
        scale = seg[where].attrs.get("act_scale")
        if not isinstance(scale, int | float) or not np.isfinite(scale) or scale <= 0:
            problems.append(f"{where}: bad act_scale {scale!r}")
        lens = np.diff(off)
        if off.shape != (num_features + 1,) or off[0] != 0 or (lens < 0).any() or off[-1] != gaps.size:
            problems.append(f"{where}: offsets are not monotone from 0 to len(pos_gaps)")
            continue
        if q.shape != gaps.shape:
            problems.append(f"{where}: act_u8 and pos_gaps differ in length")
        later = np.ones(gaps.size, dtype=bool)
        later[off[:-1][lens > 0]] = False
        if (gaps[later] == 0).any():
            problems.append(f"{where}: positions not strictly increasing within a list")
        positions = decode_gaps(gaps, lens)
        if positions.size and (positions.min() < 0 or positions.max() >= n):
            problems.append(f"{where}: positions outside [0, {n})")
            continue
        bad = int((np.bincount(positions, minlength=n) != k).sum())
        if bad:
            problems.append(f"{where}: {bad} tokens do not hold exactly k={k} postings")
    return problems
