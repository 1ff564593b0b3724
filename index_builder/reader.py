"""``IndexReader``: read access to a posting-list index on disk (Lucene-style immutable segments in one Zarr
v3 group, listed by ``manifest.json``). Writing is ``indexer.IndexWriter``, which extends this class.

Snapshot reads: a reader sees one manifest generation from open until :meth:`IndexReader.refresh` moves it to
the newest one (Lucene's ``openIfChanged``). It holds a lease on that generation (``s3attn.leases``: a shared
``flock`` on ``leases/gen-NNNNNN.lock``) until it moves or closes, and writers delete no segment that a leased
generation lists, so a merge in another process never removes files under a reader.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import zarr

from s3attn.constants import (
    BM25_DIR,
    INDEX_KIND,
    INDEX_MANIFEST,
    INDEX_ROOT,
    INDEX_TOKENS_ARRAY,
    SEGMENTS_DIR,
)
from s3attn.errors import READ_ERRORS, S3Error, index_damaged, one_line
from s3attn.index_builder.bm25 import verify_bm25
from s3attn.index_builder.chunks import TEXT_CACHE_BYTES, ChunkReader
from s3attn.index_builder.doc_table import DocTable
from s3attn.index_builder.meta import IndexAttrs, Manifest, SegmentMeta, read_manifest
from s3attn.index_builder.schema import (
    TOKEN_DTYPE,
    DocRecord,
    Postings,
    disk_usage,
    segment_path,
    tier_sizes,
)
from s3attn.index_builder.segment_reader import SegmentReader, open_segment, read_postings
from s3attn.index_builder.verify import verify_segment, verify_segments_group
from s3attn.leases import MAX_TRIES, Lease, manifest_copy
from s3attn.storage import Location, index_location, refresh_copy, zarr_store

IndexPath = Path | Location
"""Where an index lives: a local folder (read through its files directly) or an fsspec URL (``storage``)."""


def open_index_group(path: IndexPath, *, write: bool) -> tuple[zarr.Group, Manifest, IndexAttrs]:
    """The root group (read-write when ``write``), the manifest and the typed root attributes of the index
    at ``path``; S3Error naming the file when one is missing, IndexCorruptError when one is damaged."""
    if not (path / INDEX_MANIFEST).is_file():
        raise S3Error(
            f"{path}: no s3attn index here ({INDEX_MANIFEST} missing); build one with s3-index build"
        )
    manifest = read_manifest(path)
    where, hint = f"{INDEX_ROOT}/zarr.json", f"s3-index verify {path} cannot check the index without it: "
    hint += "restore it from a backup or rebuild the index"
    try:
        root = zarr.open_group(
            zarr_store(path / INDEX_ROOT, read_only=not write), mode="r+" if write else "r"
        )
        raw = root.attrs.asdict()
    except READ_ERRORS as err:
        raise index_damaged(path, where, err, hint) from err
    if raw.get("kind") != INDEX_KIND:
        raise index_damaged(path, where, f"kind is {raw.get('kind')!r}, not {INDEX_KIND!r}", hint)
    try:
        meta = IndexAttrs.from_json(raw)
    except ValueError as err:
        raise index_damaged(path, where, f"malformed index attributes: {err}", hint) from err
    return root, manifest, meta


# ---- generations and leases -------------------------------------------------------------------------
def lease_current(path: IndexPath, first: Manifest) -> tuple[Manifest, Lease | None]:
    """Lease the generation of ``first`` (the manifest just read) and confirm it is still the current one:
    then the lease was in place before any writer made it old, so the collection after that commit sees it.
    When a writer moved on meanwhile, lease the newer one instead. Returns the manifest and its lease."""
    manifest = first
    for _ in range(MAX_TRIES):
        lease = Lease.take(path, manifest.generation)
        if lease is None:
            return manifest, None
        now = read_manifest(path)
        if now.generation == manifest.generation:
            return manifest, lease
        lease.release()
        manifest = now
    raise S3Error(f"{path}: the index changes faster than it can be opened; try again")


def read_manifest_copy(path: IndexPath, generation: int) -> Manifest | None:
    """The kept manifest of ``generation`` (``manifests/``), or None when it is missing or unreadable."""
    try:
        manifest = Manifest.from_json(json.loads(manifest_copy(path, generation).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None
    return manifest if manifest.generation == generation else None


def segments_in_use(path: IndexPath, current: Manifest, leased: set[int]) -> set[str] | None:
    """Names of the segments the current generation or a leased one lists; None when the manifest of a
    leased generation cannot be read (then only temp folders may be deleted)."""
    names = {s.name for s in current.segments}
    for gen in sorted(leased - {current.generation}):
        manifest = read_manifest_copy(path, gen)
        if manifest is None:
            return None
        names.update(s.name for s in manifest.segments)
    return names


class Snapshot(NamedTuple):
    """An index opened at one generation: its root group, manifest, attributes and the reader's lease."""

    root: zarr.Group
    manifest: Manifest
    meta: IndexAttrs
    lease: Lease | None  # None where the index folder is read-only (then nothing changes it)


def open_snapshot(path: IndexPath) -> Snapshot:
    """The index at ``path`` read-only, with its current generation leased (see ``s3attn.leases``)."""
    root, first, meta = open_index_group(path, write=False)
    manifest, lease = lease_current(path, first)
    return Snapshot(root, manifest, meta, lease)


class IndexReader:
    """An index folder opened for reading: documents, tokens, posting lists, document frequencies, checks."""

    def __init__(
        self,
        path: IndexPath,
        root: zarr.Group,
        manifest: Manifest,
        meta: IndexAttrs,
        lease: Lease | None = None,
    ) -> None:
        self._lease = lease  # held until refresh() moves it or close()
        self.path = path
        self._root = root
        self.meta = meta
        self._readers: dict[str, SegmentReader] = {}
        self._chunks = ChunkReader()  # decoded posting chunks, shared by every question on this index
        self._text_chunks = ChunkReader(TEXT_CACHE_BYTES)  # decoded token chunks (span text), kept apart
        self._set_manifest(manifest)

    @classmethod
    def open(cls, path: str | os.PathLike | Location) -> IndexReader:
        """Open the index at ``path`` (a folder or an fsspec URL) for reading, at its current generation
        (leased until close; see ``leases.REMOTE_GRACE_S`` for object storage)."""
        path = index_location(path)
        return cls(path, *open_snapshot(path))

    def close(self) -> None:
        """Release the chunk files held open for reads and the lease on the generation read."""
        self._chunks.close()
        self._text_chunks.close()
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()

    def refresh(self) -> bool:
        """Move to the newest generation if a writer committed one since this reader opened or last moved
        (Lucene's ``openIfChanged``; call it between questions). Segment readers of segments still listed are
        kept and only new segments are opened (on first use); the lease moves to the new generation, so the
        segments only the old one listed can be deleted. Returns whether the reader moved."""
        if isinstance(self.path, Location):  # a BM25 folder copied here earlier is fetched again if rebuilt
            refresh_copy(self.path / BM25_DIR)
        current = read_manifest(self.path)
        if current.generation == self.generation:
            return False
        manifest, lease = lease_current(self.path, current)
        dropped = {s.name for s in self._manifest.segments} - {s.name for s in manifest.segments}
        old, self._lease = self._lease, lease
        self._set_manifest(manifest)
        if dropped:  # descriptors of files the new generation no longer lists
            self._chunks.close()
            self._text_chunks.close()
        if old is not None:
            old.release()
        return True

    @property
    def leased_generation(self) -> int | None:
        """The generation this reader holds a lease on (None: not leased, e.g. a read-only index folder)."""
        return self._lease.generation if self._lease is not None else None

    def __enter__(self) -> IndexReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit, module globals (contextlib, os) may be gone already
            pass

    # ---- state -----------------------------------------------------------------------------------------
    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def segments(self) -> list[SegmentMeta]:
        """The live segments, in token order."""
        return list(self._manifest.segments)

    @property
    def generation(self) -> int:
        return self._manifest.generation

    @property
    def format_version(self) -> int:
        """The format the index was created in (older formats are still read)."""
        return self._manifest.format_version

    @property
    def attrs(self) -> dict[str, Any]:
        """The root attributes as JSON (a copy); :attr:`meta` holds them typed."""
        return self.meta.to_json()

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self._manifest.segments)

    @property
    def num_docs(self) -> int:
        return sum(s.num_docs for s in self._manifest.segments)

    @property
    def heads(self) -> list[tuple[int, int]]:
        """Every (layer, kv head) the index holds postings for."""
        return self.meta.heads

    def _closed_prefix(self) -> int:
        """Number of leading segments that end on a document boundary (open tail excluded)."""
        segs = self._manifest.segments
        n = len(segs)
        while n > 0 and segs[n - 1].open_doc:
            n -= 1
        return n

    def has_open_tail(self) -> bool:
        """True when the last segments hold pieces of a document that no segment closed (a killed build)."""
        return self._closed_prefix() < len(self._manifest.segments)

    def _set_manifest(self, manifest: Manifest) -> None:
        """Make ``manifest`` the live one and drop what was cached for segments it no longer lists."""
        self._manifest = manifest
        live = {s.name for s in manifest.segments}
        self._readers = {n: r for n, r in self._readers.items() if n in live}
        self._starts = [s.token_start for s in manifest.segments]
        self._df: dict[tuple[int, int], np.ndarray] = {}
        self._tf: dict[tuple[int, int], np.ndarray] = {}
        self._doc_keys: set[tuple[str, str]] | None = None

    def _reader(self, entry: SegmentMeta) -> SegmentReader:
        r = self._readers.get(entry.name)
        if r is None:
            r = self._readers[entry.name] = open_segment(self._root, entry, self.path, self.meta.num_latents)
        return r

    def _seg_dir(self, name: str) -> IndexPath:
        return self.path / INDEX_ROOT / SEGMENTS_DIR / name

    # ---- reading ---------------------------------------------------------------------------------------
    def documents(self) -> list[DocRecord]:
        return [d for e in self._manifest.segments for d in self._reader(e).docs()]

    def doc_table(self) -> DocTable:
        """The documents of this generation as a :class:`DocTable` (no record per document is made)."""
        return DocTable.of_columns(self._reader(e).doc_columns() for e in self._manifest.segments)

    def has_document(self, path: str, content_hash: str) -> bool:
        if self._doc_keys is None:
            self._doc_keys = {(d.path, d.content_hash) for d in self.documents()}
        return (str(path), str(content_hash)) in self._doc_keys

    def tokens(self, start: int, end: int) -> np.ndarray:
        """Token ids of the global range [start, end), across segments."""
        if not 0 <= start <= end <= self.num_tokens:
            raise ValueError(f"token range [{start}, {end}) outside [0, {self.num_tokens})")
        parts = []
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        segs = self._manifest.segments
        while start < end and i < len(segs):
            stop = min(end, segs[i].token_end)
            if stop > start:
                rel = start - segs[i].token_start
                ids = self._reader(segs[i]).read(self._text_chunks, INDEX_TOKENS_ARRAY, [rel], [stop - start])
                parts.append(ids.astype(TOKEN_DTYPE))
                start = stop
            i += 1
        return np.concatenate(parts) if parts else np.zeros(0, np.uint32)

    def doc_freq(self, layer: int, kv_head: int) -> np.ndarray:
        """int64 [F]: number of postings of each feature, over all live segments."""
        key = (int(layer), int(kv_head))
        df = self._df.get(key)
        if df is None:
            df = np.zeros(self.meta.num_latents, dtype=np.int64)
            for entry in self._manifest.segments:
                df += np.diff(self._reader(entry).offsets(*key))
            self._df[key] = df
        return df

    def tier_freq(self, layer: int, kv_head: int) -> np.ndarray:
        """int64 [F, tiers]: postings of each feature in each impact tier, over all live segments (a segment
        in position order, of format 1 or 2, counts its whole list as tier 0); sums to :meth:`doc_freq`."""
        key = (int(layer), int(kv_head))
        tf = self._tf.get(key)
        if tf is None:
            readers = [self._reader(e) for e in self._manifest.segments]
            tf = np.zeros(
                (self.meta.num_latents, max((len(r.tiers()) for r in readers), default=1)), np.int64
            )
            for r in readers:
                sizes = tier_sizes(np.diff(r.offsets(*key)), r.tiers())
                tf[:, : sizes.shape[1]] += sizes
            self._tf[key] = tf
        return tf

    def postings(
        self, layer: int, kv_head: int, features: np.ndarray, depths: np.ndarray | None = None
    ) -> Postings:
        """Postings of ``features`` (any order, repeats allowed), grouped by slot: all of them, positions
        ascending; or, given ``depths`` (int per slot), only the top ``depths[j]`` impact tiers of slot j's
        list in each segment, tier by tier (see :func:`~s3attn.index_builder.segment_reader.read_postings`).

        Per segment, each distinct feature's range of ``pos_gaps`` and ``act_u8`` is read by whole chunks
        (:class:`~s3attn.index_builder.chunks.ChunkReader`, decoded chunks cached); no per-posting loop.
        """
        num_f = self.meta.num_latents
        features = np.asarray(features, dtype=np.int64).ravel()
        if features.size and (features.min() < 0 or features.max() >= num_f):
            raise ValueError(f"feature ids must lie in [0, {num_f})")
        readers = [self._reader(e) for e in self._manifest.segments]
        if depths is not None and np.shape(depths) != features.shape:
            raise ValueError(f"depths {np.shape(depths)} must give one depth per feature {features.shape}")
        return read_postings(readers, int(layer), int(kv_head), features, self._chunks, depths)

    def info(self) -> dict:
        """Sizes: documents (a document written in pieces counts once), tokens, postings, segments, bytes on
        disk (total and per array kind); the model precision of the build (``dtype``)."""
        total, by_kind = disk_usage(self.path)
        postings = sum(s.num_postings for s in self._manifest.segments)
        return {
            "documents": int(np.unique(self.doc_table().ranges_D3[:, 0]).size),
            "dtype": self.meta.dtype,
            "tokens": self.num_tokens,
            "postings": postings,
            "segments": len(self._manifest.segments),
            "bytes_on_disk": total,
            "bytes_per_posting": total / postings if postings else math.nan,
            "bytes_by_array": by_kind,
        }

    def verify(self) -> list[str]:
        """Check every invariant of the index, every file read whole; returns one line per problem (empty
        list = sound): damaged or missing files are problems, never exceptions."""
        problems = verify_segments_group(self._root, bool(self._manifest.segments))
        expect_start, expect_doc = 0, 0
        for entry in self._manifest.segments:
            name = entry.name
            if entry.token_start != expect_start or entry.doc_start != expect_doc:
                problems.append(f"segment {name}: token_start/doc_start do not follow the previous segment")
            expect_start, expect_doc = entry.token_end, entry.doc_start + entry.num_docs
            if not (self._seg_dir(name) / "zarr.json").is_file():
                problems.append(f"segment {name}: listed in {INDEX_MANIFEST} but missing on disk")
                continue
            try:
                group = zarr.open_group(self._root.store, path=segment_path(name), mode="r")
                found = verify_segment(group, entry, self.heads, self.meta.num_latents, self.meta.k)
                problems += [f"segment {name}: {p}" for p in found]
            except Exception as err:
                problems.append(f"segment {name}: unreadable ({one_line(err)})")
        return problems + verify_bm25(self.path, self.num_tokens)


def doc_ranges(index: IndexReader) -> list[tuple[int, int, int]]:
    """(doc_id, start, end) per document, pieces of one document joined."""
    return index.doc_table().ranges()
