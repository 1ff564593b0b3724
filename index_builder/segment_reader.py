"""Reading one immutable index segment: its arrays, documents and posting lists.

A segment holds the tokens ``[token_start, token_start + T)`` and, per (layer, kv head), CSR posting lists
``feature -> segment-relative positions`` (see ``schema``): in position order (formats 1 and 2), or in impact
tiers (format 3: tier 0, the highest stored activations, first; positions increasing within each tier), so
that the top tiers of a list are a prefix of it, read without the rest (:func:`read_postings`, ``depths``).
Writing segments is ``segment_writer``. Reading a damaged segment raises ``IndexCorruptError`` naming the
index, segment and array; ``verify.verify_segment`` reports damage as problem lines instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator

import numpy as np
import zarr

from s3attn.constants import (
    INDEX_ACT_ARRAY,
    INDEX_DOCS_ARRAY,
    INDEX_GAPS_ARRAY,
    INDEX_MANIFEST,
    INDEX_OFFSETS_ARRAY,
    INDEX_TOKENS_ARRAY,
)
from s3attn.errors import READ_ERRORS, IndexCorruptError, index_damaged
from s3attn.index_builder.chunks import ChunkDamage, ChunkReader
from s3attn.index_builder.doc_table import DocColumns, table_problems
from s3attn.index_builder.meta import SegmentAttrs, SegmentMeta
from s3attn.index_builder.schema import (
    ACT_SCALE_ATTR,
    DOC_ARRAYS,
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
    segment_path,
    tier_sizes,
)

HEAD_ARRAYS = (INDEX_OFFSETS_ARRAY, INDEX_GAPS_ARRAY, INDEX_ACT_ARRAY)
ATTRS_FILE = "its attributes (zarr.json)"


def act_scale_attr(group: zarr.Group) -> object:
    """The ``act_scale`` attribute of a (layer, kv head) group, as stored (None when absent)."""
    return group.attrs.get(ACT_SCALE_ATTR)


def scale_problem(scale: object) -> str | None:
    """Why ``scale`` cannot be an ``act_scale`` (a positive power of two, see ``schema.act_scale_of``)."""
    ok = isinstance(scale, int | float) and not isinstance(scale, bool) and math.isfinite(scale)
    if not (ok and scale > 0 and math.frexp(scale)[0] == 0.5):
        return f"bad act_scale {scale!r} (not a positive power of two)"
    return None


def attrs_problems(attrs: SegmentAttrs, entry: SegmentMeta) -> list[str]:
    """The segment's attributes against its manifest entry: token range, checksum table, documents table."""
    problems: list[str] = []
    start, n = attrs.token_start, attrs.num_tokens
    if start != entry.token_start or n != entry.num_tokens:
        problems.append("token_start/num_tokens differ from the manifest")
    if segment_checksum(dict(attrs.checksums), start, n) != entry.checksum:
        problems.append("checksum table does not match the manifest")
    if attrs.docs is not None:  # up to format 3; format 4's arrays are checked when read (doc_columns)
        table = [(d.doc_id, d.token_start, d.num_tokens) for d in attrs.docs]
        problems += table_problems(np.array(table, dtype=np.int64), start, n, entry.num_docs)
    return problems


def gaps_problems(gaps: np.ndarray, lens: np.ndarray, positions: np.ndarray, n: int) -> list[str]:
    """Why decoded lists (``gaps`` by list lengths ``lens``, decoded to ``positions``) cannot be posting
    lists of a segment of ``n`` tokens: a later gap of 0 (not strictly increasing), a position >= n."""
    lens = np.asarray(lens, dtype=np.int64)
    first = (np.cumsum(lens) - lens)[lens > 0]
    problems = []
    if np.count_nonzero(gaps == 0) != np.count_nonzero(gaps[first] == 0):
        problems.append("positions not strictly increasing within a list")
    if positions.size and int(positions.max()) >= n:
        problems.append(f"positions outside [0, {n})")
    return problems


class SegmentReader:
    """Read access to one published segment; array handles, offsets and scales are cached (segments are
    immutable).

    What reading a damaged file raises becomes an :class:`~s3attn.errors.IndexCorruptError` naming the index,
    the segment and the array. Checked on first use, at little cost: the attributes against the manifest
    entry (range, checksum table, documents), each ``offsets`` array against its checksum and its lists'
    shape, ``act_scale``; on every read, decoded positions (strictly increasing, inside the segment), and a
    Blosc chunk holding a whole array against the array's checksum (see ``chunks``)."""

    def __init__(
        self,
        seg: zarr.Group,
        meta: SegmentMeta,
        *,
        index: str | os.PathLike | None = None,
        num_features: int | None = None,
    ) -> None:
        self._group: zarr.Group | None = seg  # read once for its attributes, then dropped (see attrs)
        self._at = seg.store_path  # the segment's folder in its store: arrays are opened from here
        self.meta = meta
        self.index = str(index if index is not None else self._at)  # the index folder, for messages
        self.num_features = num_features  # F, when known: offsets must hold F + 1 entries
        self.token_start = int(meta.token_start)
        self.num_tokens = int(meta.num_tokens)
        self._arrays: dict[str, zarr.Array] = {}
        self._offsets: dict[tuple[int, int], np.ndarray] = {}
        self._scales: dict[tuple[int, int], float] = {}
        self._attrs: SegmentAttrs | None = None

    # ---- damage ------------------------------------------------------------------------------------------
    def damaged(self, what: str, reason: object) -> IndexCorruptError:
        """The error for damaged ``what`` (an array path or a file) of this segment."""
        return index_damaged(self.index, f"segment {self.meta.name}, {what}", reason)

    @contextlib.contextmanager
    def reading(self, what: str) -> Iterator[None]:
        """Turn what reading damaged ``what`` raises (see ``errors.READ_ERRORS``) into IndexCorruptError."""
        try:
            yield
        except ChunkDamage as err:
            raise self.damaged(what, str(err)) from err
        except READ_ERRORS as err:
            raise self.damaged(what, err) from err

    # ---- metadata ----------------------------------------------------------------------------------------
    def attrs(self) -> SegmentAttrs:
        """The segment group's attributes, checked against the manifest entry, cached without the documents
        table of formats 1-3 (``docs`` then ``()``; None in format 4, whose table is arrays): a reader does not
        hold a record per document (at 16M tokens they were ~3 MiB)."""
        if self._attrs is None:
            self._keep(self._read_attrs())
        return self._attrs  # type: ignore[return-value]

    def docs(self) -> list[DocRecord]:
        """The segment's documents (global token_start), content hashes included, read on each call."""
        return self.doc_columns(hashes=True).records()

    def doc_columns(self, *, hashes: bool = False) -> DocColumns:
        """The segment's documents table, read on each call: from its arrays (format 4; each checked against
        its checksum, the table against the manifest entry) or its attributes (formats 1-3, parsed again).
        ``hashes``: also the content hashes (only the writer and ``docs()`` need them)."""
        if self._attrs is None or self._attrs.docs is not None:  # not read yet, or formats 1-3
            attrs = self._read_attrs()  # one parse serves both on first use
            if self._attrs is None:
                self._keep(attrs)
            if attrs.docs is not None:
                return DocColumns.of(attrs.docs)
        names = DOC_ARRAYS if hashes else DOC_ARRAYS[:2]  # docs, doc_paths[, doc_hashes]
        got = {}
        for name in names:
            with self.reading(name):
                got[name] = self.checked(name, np.asarray(self.array(name)[...]))
        try:
            cols = DocColumns.stored(*(got.get(name) for name in DOC_ARRAYS))  # type: ignore[arg-type]
        except ValueError as err:
            raise self.damaged(INDEX_DOCS_ARRAY, err) from err
        problems = cols.problems(self.token_start, self.num_tokens, self.meta.num_docs)
        if problems:
            raise self.damaged(INDEX_DOCS_ARRAY, problems[0])
        return cols

    def _read_attrs(self) -> SegmentAttrs:
        """The attributes as stored. The group object given at open is dropped once read: it holds their JSON
        (a dict per document), three times the size of the parsed table."""
        with self.reading(ATTRS_FILE):
            group = self._group or zarr.open_group(store=self._at, mode="r")
            self._group = None
            return SegmentAttrs.from_json(group.attrs.asdict())

    def _keep(self, attrs: SegmentAttrs) -> None:
        problems = attrs_problems(attrs, self.meta)
        if problems:
            raise self.damaged(ATTRS_FILE, problems[0])
        self._attrs = attrs if attrs.docs is None else dataclasses.replace(attrs, docs=())

    def array(self, path: str) -> zarr.Array:
        arr = self._arrays.get(path)
        if arr is None:
            with self.reading(f"{path} (zarr.json)"):
                arr = zarr.open_array(store=self._at / path, mode="r")
            self._arrays[path] = arr
        return arr

    def check_checksum(self, path: str, found: str) -> None:
        """IndexCorruptError unless ``found`` (the crc32 of the whole array ``path``) is the segment's."""
        if found != self.attrs().checksums.get(path):
            raise self.damaged(path, "its data do not match the segment's checksum")

    def checked(self, path: str, data: np.ndarray) -> np.ndarray:
        """``data`` (the whole array ``path``), after checking it against the segment's checksum table."""
        self.check_checksum(path, array_checksum(data))
        return data

    def offsets(self, layer: int, kv: int) -> np.ndarray:
        """CSR offsets as int64 [F+1] (cached in RAM), checked against their checksum on first use."""
        off = self._offsets.get((layer, kv))
        if off is None:
            path, gaps, acts = (head_array(layer, kv, kind) for kind in HEAD_ARRAYS)
            arr = self.array(path)
            with self.reading(path):
                off = self.checked(path, np.asarray(arr[...])).astype(np.int64)
            n = self.array(gaps).shape[0]
            if self.num_features is not None and off.shape != (self.num_features + 1,):
                raise self.damaged(path, f"{off.size} entries, the index has {self.num_features} features")
            if off.size == 0 or off[0] != 0 or (np.diff(off) < 0).any() or off[-1] != n:
                raise self.damaged(path, "offsets are not monotone from 0 to len(pos_gaps)")
            if self.array(acts).shape[0] != n:
                raise self.damaged(acts, "its length differs from pos_gaps")
            self._offsets[(layer, kv)] = off
        return off

    def act_scale(self, layer: int, kv: int) -> float:
        s = self._scales.get((layer, kv))
        if s is None:
            where = f"{head_group(layer, kv)} (zarr.json)"
            with self.reading(where):
                value = act_scale_attr(zarr.open_group(store=self._at / head_group(layer, kv), mode="r"))
            problem = scale_problem(value)
            if problem:
                raise self.damaged(where, problem)
            s = self._scales[(layer, kv)] = float(value)  # type: ignore[arg-type]
        return s

    # ---- data --------------------------------------------------------------------------------------------
    def read(self, chunks: ChunkReader, path: str, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """Concatenated ranges of array ``path`` through ``chunks`` (see :meth:`ChunkReader.read`)."""
        arr, checksum = self.array(path), self.attrs().checksums.get(path)
        with self.reading(path):
            return chunks.read(arr, starts, lens, checksum)

    def positions(self, gaps: np.ndarray, lens: np.ndarray, path: str) -> np.ndarray:
        """Segment-relative positions (int64) of concatenated gap lists of ``path``, checked."""
        positions = decode_gaps(gaps, lens)
        problems = gaps_problems(gaps, lens, positions, self.num_tokens)
        if problems:
            raise self.damaged(path, problems[0])
        return positions

    def tokens(self, start: int, end: int) -> np.ndarray:
        """Token ids of segment-relative range [start, end) (all of them checked, as a merge reads them)."""
        with self.reading(INDEX_TOKENS_ARRAY):
            ids = np.asarray(self.array(INDEX_TOKENS_ARRAY)[start:end], dtype=TOKEN_DTYPE)
        whole = start == 0 and end >= self.num_tokens
        return self.checked(INDEX_TOKENS_ARRAY, ids) if whole else ids

    def tiers(self) -> tuple[int, ...]:
        """The divisors of this segment's tier cuts (``schema.TIER_DIVISORS``); (1,): lists in position
        order (formats 1 and 2)."""
        return self.attrs().tiers

    def read_head(self, layer: int, kv: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Whole head: (offsets uint64 as stored, positions int64 relative, q uint8, act_scale), every list in
        position order whatever the segment's format, each array checked against its checksum (for checks
        and tests; a merge streams batches of lists instead, ``segment_merge``)."""
        data = []
        for kind in HEAD_ARRAYS:
            path = head_array(layer, kv, kind)
            arr = self.array(path)
            with self.reading(path):
                data.append(self.checked(path, np.asarray(arr[...])))
        off, gaps, q = data
        lens = np.diff(off.astype(np.int64))
        if lens.size and (lens.min() < 0 or int(off[-1]) != gaps.size):
            raise self.damaged(head_array(layer, kv, INDEX_OFFSETS_ARRAY), "offsets do not describe pos_gaps")
        tiers = self.tiers()
        positions = self.positions(
            gaps, tier_sizes(lens, tiers).ravel(), head_array(layer, kv, INDEX_GAPS_ARRAY)
        )
        if len(tiers) > 1:
            order = by_position(positions, lens, self.num_tokens)
            positions, q = positions[order], q[order]
        return off, positions, q, self.act_scale(layer, kv)


def by_position(positions: np.ndarray, lens: np.ndarray, num_tokens: int) -> np.ndarray:
    """The order that puts each of the concatenated lists (``lens`` postings each, positions in
    ``[0, num_tokens)``, unique within a list) in position order, lists kept in place."""
    slot = np.repeat(np.arange(lens.size, dtype=np.int64), lens)
    return np.argsort(slot * max(1, num_tokens) + positions, kind="stable")


def open_segment(
    root: zarr.Group, entry: SegmentMeta, index: str | os.PathLike, num_features: int
) -> SegmentReader:
    """A :class:`SegmentReader` of the segment ``entry`` names in the index group ``root`` of ``index``;
    IndexCorruptError when its folder is missing or its metadata unreadable."""
    where = f"segment {entry.name}"
    try:
        group = root[segment_path(entry.name)]
    except KeyError:
        raise index_damaged(index, where, f"listed in {INDEX_MANIFEST} but missing on disk") from None
    except READ_ERRORS as err:
        raise index_damaged(index, f"{where}, {ATTRS_FILE}", err) from err
    if not isinstance(group, zarr.Group):
        raise index_damaged(index, f"{where}, {ATTRS_FILE}", "not a group")
    return SegmentReader(group, entry, index=index, num_features=num_features)


def read_postings(
    readers: list[SegmentReader],
    layer: int,
    kv: int,
    features: np.ndarray,
    chunks: ChunkReader,
    depths: np.ndarray | None = None,
) -> Postings:
    """Posting lists of ``features`` (int64, any order, repeats allowed) over ``readers`` (token order).

    ``depths`` (int [slots], optional): read only the top ``depths[j]`` impact tiers of slot j's list in each
    segment (0: none; a segment in position order holds one tier, its list). Those tiers are a prefix of the
    stored list, read without the rest. Per segment the lists are read in slot order (whole chunks, see
    :mod:`chunks`), gaps decoded by one cumulative sum; output slot-major, segment by segment in token order
    within a slot. Without ``depths`` every slot's list comes in global position order (a tiered segment's
    tiers sorted back); with them, a tiered segment's part of a slot comes tier by tier (impact order),
    positions increasing within each tier.
    """
    features = np.asarray(features, dtype=np.int64)
    n_slots = features.size
    parts = []
    gaps_path, act_path = head_array(layer, kv, INDEX_GAPS_ARRAY), head_array(layer, kv, INDEX_ACT_ARRAY)
    for r in readers:
        off = r.offsets(layer, kv)
        tiers = r.tiers()
        sub = tier_sizes(off[features + 1] - off[features], tiers)  # [slots, tiers]
        if depths is not None:
            sub = sub * (np.arange(len(tiers)) < np.asarray(depths, dtype=np.int64)[:, None])
        lens = sub.sum(axis=1)
        if not lens.sum():
            continue
        gaps = r.read(chunks, gaps_path, off[features], lens)
        q = r.read(chunks, act_path, off[features], lens)
        positions = r.positions(gaps, sub.ravel(), gaps_path)
        if depths is None and len(tiers) > 1:
            order = by_position(positions, lens, r.num_tokens)
            positions, q = positions[order], q[order]
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
