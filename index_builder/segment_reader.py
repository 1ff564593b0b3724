"""Reading one immutable index segment: its arrays, documents and posting lists, and its verification.

A segment holds the tokens ``[token_start, token_start + T)`` and, per (layer, kv head), CSR posting lists
``feature -> sorted segment-relative positions`` (see ``schema``). Writing segments is ``segment_writer``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import zarr

from s3attn.constants import INDEX_ACT_ARRAY, INDEX_GAPS_ARRAY, INDEX_OFFSETS_ARRAY, INDEX_TOKENS_ARRAY
from s3attn.index_builder.chunks import ChunkReader
from s3attn.index_builder.meta import SegmentAttrs, SegmentMeta
from s3attn.index_builder.schema import (
    ACT_SCALE_ATTR,
    TOKEN_DTYPE,
    DocRecord,
    Postings,
    array_checksum,
    concat_ranges,
    decode_gaps,
    dequantize_acts,
    head_array,
    head_group,
    segment_checksum,
)

HEAD_ARRAYS = (INDEX_OFFSETS_ARRAY, INDEX_GAPS_ARRAY, INDEX_ACT_ARRAY)


def act_scale_attr(group: zarr.Group) -> object:
    """The ``act_scale`` attribute of a (layer, kv head) group, as stored (None when absent)."""
    return group.attrs.get(ACT_SCALE_ATTR)


class SegmentReader:
    """Read access to one published segment; array handles, offsets and scales are cached (segments are
    immutable)."""

    def __init__(self, seg: zarr.Group, meta: SegmentMeta) -> None:
        self.group = seg
        self.meta = meta
        self.token_start = int(meta.token_start)
        self.num_tokens = int(meta.num_tokens)
        self._arrays: dict[str, zarr.Array] = {}
        self._offsets: dict[tuple[int, int], np.ndarray] = {}
        self._scales: dict[tuple[int, int], float] = {}
        self._attrs: SegmentAttrs | None = None

    def attrs(self) -> SegmentAttrs:
        """The segment group's attributes (cached)."""
        if self._attrs is None:
            self._attrs = SegmentAttrs.from_json(self.group.attrs.asdict())
        return self._attrs

    def docs(self) -> list[DocRecord]:
        """The segment's documents table (global token_start)."""
        return list(self.attrs().docs)

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
            s = float(act_scale_attr(self.group[head_group(layer, kv)]))  # type: ignore[arg-type]
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
def _check_tables(attrs: SegmentAttrs, entry: SegmentMeta, heads: list[tuple[int, int]], k: int) -> list[str]:
    """The segment's attributes against its manifest entry: range, checksum, documents, postings count."""
    problems: list[str] = []
    start, n = attrs.token_start, attrs.num_tokens
    if start != entry.token_start or n != entry.num_tokens:
        problems.append("token_start/num_tokens differ from the manifest")
    if segment_checksum(dict(attrs.checksums), start, n) != entry.checksum:
        problems.append("checksum table does not match the manifest")
    if len(attrs.docs) != entry.num_docs:
        problems.append(f"{len(attrs.docs)} documents, the manifest says {entry.num_docs}")
    pos = start
    for d in attrs.docs:
        if d.token_start != pos or d.num_tokens <= 0:
            problems.append(f"document {d.path} does not start where the previous one ends")
            break
        pos += d.num_tokens
    if pos != start + n:
        problems.append(f"documents cover {pos - start} tokens, the segment has {n}")
    paths = {INDEX_TOKENS_ARRAY} | {head_array(lay, h, kind) for lay, h in heads for kind in HEAD_ARRAYS}
    if set(attrs.checksums) != paths:
        problems.append("checksum table does not list exactly the segment's arrays")
    if entry.num_postings != n * k * len(heads):
        problems.append(f"num_postings {entry.num_postings} != tokens x k x heads")
    return problems


def _check_head(
    seg: zarr.Group, where: str, load: Callable[[str], np.ndarray], n: int, num_features: int, k: int
) -> list[str]:
    """One (layer, kv head) group ``where``: scale, CSR shape, strictly increasing lists, k per token."""
    problems: list[str] = []
    off = load(f"{where}/{INDEX_OFFSETS_ARRAY}").astype(np.int64)
    gaps = load(f"{where}/{INDEX_GAPS_ARRAY}")
    q = load(f"{where}/{INDEX_ACT_ARRAY}")
    scale = act_scale_attr(seg[where])
    if not isinstance(scale, int | float) or not np.isfinite(scale) or scale <= 0:
        problems.append(f"{where}: bad act_scale {scale!r}")
    lens = np.diff(off)
    if off.shape != (num_features + 1,) or off[0] != 0 or (lens < 0).any() or off[-1] != gaps.size:
        return [*problems, f"{where}: offsets are not monotone from 0 to len(pos_gaps)"]
    if q.shape != gaps.shape:
        problems.append(f"{where}: act_u8 and pos_gaps differ in length")
    later = np.ones(gaps.size, dtype=bool)
    later[off[:-1][lens > 0]] = False
    if (gaps[later] == 0).any():
        problems.append(f"{where}: positions not strictly increasing within a list")
    positions = decode_gaps(gaps, lens)
    if positions.size and (positions.min() < 0 or positions.max() >= n):
        return [*problems, f"{where}: positions outside [0, {n})"]
    bad = int((np.bincount(positions, minlength=n) != k).sum())
    if bad:
        problems.append(f"{where}: {bad} tokens do not hold exactly k={k} postings")
    return problems


def verify_segment(
    seg: zarr.Group, entry: SegmentMeta, heads: list[tuple[int, int]], num_features: int, k: int
) -> list[str]:
    """Every invariant of one published segment against its manifest ``entry``; one line per problem."""
    try:
        attrs = SegmentAttrs.from_json(seg.attrs.asdict())
    except ValueError as err:
        return [f"segment attributes are malformed ({err})"]
    problems = _check_tables(attrs, entry, heads, k)

    def load(path: str) -> np.ndarray:
        data = np.asarray(seg[path][...])
        if array_checksum(data) != attrs.checksums.get(path):
            problems.append(f"{path}: checksum mismatch")
        return data

    n = attrs.num_tokens
    if load(INDEX_TOKENS_ARRAY).shape != (n,):
        problems.append(f"tokens: shape differs from num_tokens={n}")
    for layer, h in heads:
        problems += _check_head(seg, head_group(layer, h), load, n, num_features, k)
    return problems
