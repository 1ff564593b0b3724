"""``IndexWriter``: creates an index and changes it (add, absorb and merge segments, drop an open tail,
collect garbage). It extends :class:`~s3attn.index_builder.reader.IndexReader`, so a writer reads too.

Crash safety: a segment is written under ``segments/.tmp-<uuid>``, renamed to ``segments/seg-NNNNNN`` when
complete, and only then listed in ``manifest.json`` (atomic rename; a copy of each generation's manifest is
written to ``manifests/`` just before). On object storage (an fsspec URL, ``s3attn.storage``) a segment is
written under its final name (a rename there would be a copy) and ``manifest.json`` is one PUT, written last:
the commit point is the same, and there is no writer lock and no reader lease there (``leases.REMOTE_GRACE_S``). The manifest is the one source of truth for new readers; folders it
does not list are garbage once no live reader's leased generation lists them either (``s3attn.leases``), and
``garbage_collect`` removes them: when the index is opened for writing, after every commit, and by
``s3-index gc``. One writer at a time holds an fcntl lock on ``index.lock``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import zarr

from s3attn.constants import (
    INDEX_FORMAT_VERSION,
    INDEX_KIND,
    INDEX_LOCK,
    INDEX_MANIFEST,
    INDEX_ROOT,
    SEGMENT_TMP_PREFIX,
    SEGMENTS_DIR,
)
from s3attn.errors import S3Error
from s3attn.index_builder.doc_table import DocColumns
from s3attn.index_builder.meta import IndexAttrs, Manifest, SegmentAttrs, SegmentMeta
from s3attn.index_builder.reader import (
    IndexPath,
    IndexReader,
    open_index_group,
    open_snapshot,
    segments_in_use,
)
from s3attn.index_builder.schema import SegmentData, segment_checksum, segment_name, segment_path
from s3attn.index_builder.segment_merge import merged_heads
from s3attn.index_builder.segment_writer import (
    HeadPostings,
    HeadStream,
    build_head_postings,
    check_segment_data,
    pick_merge_run,
    rebase_segment,
    write_segment_arrays,
)
from s3attn.leases import Lease, manifest_copy, prune_manifest_copies, sweep_leases
from s3attn.paths import atomic_write_json, kill_point
from s3attn.storage import Location, index_location, move_dir, rmtree, write_json, zarr_store

logger = logging.getLogger(__name__)


class GcReport(NamedTuple):
    """What :meth:`IndexWriter.garbage_collect` did."""

    deleted: list[str]  # segment folders removed (merged away or dropped, temp folders, crash leftovers)
    pending: list[str]  # segment folders kept: a generation that a live reader holds lists them
    leased: list[int]  # the generations live readers hold


NO_LOCK = -1  # the "lock" of a writer on object storage, which has no locks: one writer at a time there
KILL_COMMIT = "index-commit"  # paths.kill_point (tests): a segment is written, no manifest lists it yet


def _write_json(target: IndexPath, obj: object) -> None:
    """Temp file and rename on disk (``atomic_write_json``), one PUT on object storage."""
    if isinstance(target, Location):
        write_json(target, obj)
    else:
        atomic_write_json(target, obj)


def _publish_manifest(path: IndexPath, manifest: Manifest) -> None:
    """Keep a copy of ``manifest`` under ``manifests/``, then make it ``manifest.json`` (atomic rename; one
    PUT on object storage)."""
    _write_json(manifest_copy(path, manifest.generation), manifest.to_json())
    _write_json(path / INDEX_MANIFEST, manifest.to_json())


def _is_empty_dir(path: IndexPath) -> bool:
    return not any(p.name != INDEX_LOCK for p in path.iterdir())


def _release_lock(fd: int) -> None:
    if fd != NO_LOCK:
        os.close(fd)


def _take_lock(path: IndexPath) -> int:
    """The writer lock of the index at ``path`` (a descriptor holding it); S3Error when another holds it.
    ``NO_LOCK`` on object storage."""
    if isinstance(path, Location):
        return NO_LOCK
    fd = os.open(path / INDEX_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise S3Error(
            f"{path}: index is being written by another process (pid {holder}); wait for it"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class IndexWriter(IndexReader):
    """An index opened for writing (``create`` / ``open``): holds the writer lock until :meth:`close`."""

    def __init__(
        self,
        path: IndexPath,
        root: zarr.Group,
        manifest: Manifest,
        meta: IndexAttrs,
        lock_fd: int | None,
        lease: Lease | None = None,
    ) -> None:
        self._lock_fd = lock_fd
        self.last_gc: GcReport | None = None  # what the last garbage_collect did
        super().__init__(path, root, manifest, meta, lease)

    # ---- opening ---------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike | Location, attrs: IndexAttrs | Mapping[str, Any]) -> IndexWriter:
        """Create an empty index at ``path`` (a folder or an fsspec URL), or reopen for writing the same index
        (same model/SAE/layers/k)."""
        path = index_location(path)
        want = attrs if isinstance(attrs, IndexAttrs) else IndexAttrs.from_json(attrs)
        if path.exists() and not path.is_dir():
            raise S3Error(f"{path}: is a file, not an index folder; choose a folder")
        if (path / INDEX_MANIFEST).exists():
            return cls._reopen_same(path, want)
        if path.exists() and not _is_empty_dir(path) and not (path / INDEX_ROOT).is_dir():
            raise S3Error(
                f"{path}: folder is not empty and holds no s3attn index; choose an empty or new folder"
            )
        path.mkdir(parents=True, exist_ok=True)
        lock_fd = _take_lock(path)
        try:
            # an index.zarr without manifest is a create() that died before its manifest: nothing was live
            rmtree(path / INDEX_ROOT)
            created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
            meta = dataclasses.replace(
                want, kind=INDEX_KIND, format_version=INDEX_FORMAT_VERSION, created=created
            )
            root = zarr.create_group(zarr_store(path / INDEX_ROOT), attributes=meta.to_json())
            root.create_group(SEGMENTS_DIR)
            manifest = Manifest()
            _publish_manifest(path, manifest)
        except BaseException:
            _release_lock(lock_fd)
            raise
        return cls(path, root, manifest, meta, lock_fd)

    @classmethod
    def _reopen_same(cls, path: IndexPath, want: IndexAttrs) -> IndexWriter:
        store = cls._open(path, write=True)
        key = store.meta.identity_mismatch(want)
        if key is not None:
            store.close()
            have, asked = store.meta.to_json()[key], want.to_json()[key]
            raise S3Error(
                f"{path}: holds an index with {key}={have!r}, not {asked!r}; "
                "choose another index folder or delete this one"
            )
        return store

    @classmethod
    def open(  # type: ignore[override]
        cls, path: str | os.PathLike | Location, *, write: bool = True
    ) -> IndexWriter:
        """Open an existing index for writing: takes the writer lock and removes crash leftovers.
        (``write=False``: a read-only view whose changing methods refuse; prefer ``IndexReader.open``.)"""
        return cls._open(index_location(path), write=write)

    @classmethod
    def _open(cls, path: IndexPath, *, write: bool) -> IndexWriter:
        lock_fd = _take_lock(path) if write and (path / INDEX_MANIFEST).is_file() else None
        try:  # a read-only view leases its generation, as IndexReader.open does
            root, manifest, meta, lease = (
                (*open_index_group(path, write=True), None) if write else open_snapshot(path)
            )
        except BaseException:
            if lock_fd is not None:
                _release_lock(lock_fd)
            raise
        store = cls(path, root, manifest, meta, lock_fd, lease)
        if write:
            store.garbage_collect()
        return store

    def close(self) -> None:
        """Release the writer lock (if held) and the chunk files held open for reads."""
        super().close()
        if self._lock_fd is not None:
            _release_lock(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> IndexWriter:
        return self

    def _require_write(self) -> None:
        if self._lock_fd is None:
            raise S3Error(f"{self.path}: index opened read-only; open it with write=True to change it")

    def _swap(self, manifest: Manifest) -> None:
        """Publish ``manifest`` (its copy, then ``manifest.json`` by atomic rename); make it the live one here.
        Callers run :meth:`_collect` once the commit is complete."""
        _publish_manifest(self.path, manifest)
        self._set_manifest(manifest)

    def _collect(self) -> None:
        """Garbage collection after a commit; a failure here only leaves garbage for the next one."""
        try:
            self.garbage_collect()
        except OSError as err:
            logger.warning("%s: garbage collection failed (%s); run s3-index gc", self.path, err)

    # ---- changing ----------------------------------------------------------------------------------------
    def drop_open_tail(self) -> int:
        """Remove the open tail (manifest first, then the folders); returns the number of segments dropped."""
        self._require_write()
        keep = self._closed_prefix()
        dropped = self._manifest.segments[keep:]
        if not dropped:
            return 0
        self._swap(self._manifest.swapped(self._manifest.segments[:keep]))
        self._collect()  # the dropped folders go once no live reader's generation lists them
        return len(dropped)

    def _publish(
        self,
        entry: SegmentMeta,
        token_ids: np.ndarray,
        docs: DocColumns,
        heads: Iterable[tuple[tuple[int, int], HeadPostings | HeadStream]],
        where: slice,
    ) -> str:
        """Write a segment under a temp name, rename it into place, swap the manifest (last): ``entry``
        (name and checksum filled in here) replaces the manifest's ``segments[where]``."""
        name = segment_name(self.generation + 1)
        local = not isinstance(self.path, Location)  # object storage: written under its final name
        tmp = f"{SEGMENT_TMP_PREFIX}{uuid.uuid4().hex}" if local else name
        final = self._seg_dir(name)
        published = False
        try:
            if not local:
                rmtree(final)  # unreferenced leftover of a crashed run
            seg = self._root.create_group(segment_path(tmp))
            sums = write_segment_arrays(seg, token_ids, heads, docs)
            seg.attrs.update(SegmentAttrs(entry.token_start, entry.num_tokens, None, sums).to_json())
            if local:
                shutil.rmtree(final, ignore_errors=True)  # unreferenced leftover of a crashed run
                os.replace(self._seg_dir(tmp), final)
            published = True
            kill_point(KILL_COMMIT)
            checksum = segment_checksum(sums, entry.token_start, entry.num_tokens)
            segs = list(self._manifest.segments)
            segs[where] = [dataclasses.replace(entry, name=name, checksum=checksum)]
            self._swap(self._manifest.swapped(segs))
        except BaseException:
            rmtree(self._seg_dir(tmp))
            if published:
                rmtree(final)
            raise
        self._collect()  # segments[where] go once no live reader's generation lists them
        return name

    def absorb(self, other: IndexWriter) -> int:
        """Move every closed segment of ``other`` (a staging index of one rank, same attrs) to the end of
        this index: folders are renamed, token positions and doc ids rebased in the segment attrs (postings
        are segment-relative, so no array is rewritten), the manifest is swapped once, last. Returns the
        number of segments taken; a crash before the manifest swap leaves them unreferenced (garbage)."""
        self._require_write()
        entries = other.segments[: other._closed_prefix()]
        if not entries:
            return 0
        token_at, doc_at = self.num_tokens, self.num_docs
        next_doc = max((d.doc_id for d in self.documents()), default=-1) + 1
        first_doc = min((d.doc_id for d in other.documents()), default=0)
        gen = self.generation
        new_entries = []
        for i, e in enumerate(entries):
            name = f"{segment_name(gen + 1)}-{i:03d}"
            shift = token_at - e.token_start
            docs = (
                d._replace(token_start=d.token_start + shift, doc_id=d.doc_id - first_doc + next_doc)
                for d in other._reader(e).docs()
            )
            sums = rebase_segment(other._root[segment_path(e.name)], docs, token_at)
            move_dir(other._seg_dir(e.name), self._seg_dir(name))
            checksum = segment_checksum(sums, token_at, e.num_tokens)
            new_entries.append(
                dataclasses.replace(e, name=name, token_start=token_at, doc_start=doc_at, checksum=checksum)
            )
            token_at, doc_at = token_at + e.num_tokens, doc_at + e.num_docs
        self._swap(self._manifest.swapped([*self._manifest.segments, *new_entries]))
        self._collect()
        return len(new_entries)

    def add_segment(self, data: SegmentData, *, open_doc: bool = False) -> str:
        """Build the posting lists of ``data`` and publish them as a new segment; returns its name.

        ``open_doc``: the segment ends inside a document (a piece of a huge one) that a later segment
        closes; until then it is an open tail that ``drop_open_tail`` removes after a crash."""
        self._require_write()
        k, num_f = self.meta.k, self.meta.num_latents
        token_ids = check_segment_data(data, self.heads, k, self.num_tokens)
        n = int(token_ids.size)
        heads = ((key, build_head_postings(*data.codes[key], num_f)) for key in self.heads)
        entry = SegmentMeta(
            name="",
            token_start=int(data.token_start),
            num_tokens=n,
            doc_start=self.num_docs,
            num_docs=len(data.docs),
            num_postings=n * k * len(self.heads),
            checksum="",
            open_doc=bool(open_doc),
        )
        at = len(self._manifest.segments)
        return self._publish(entry, token_ids, DocColumns.of(data.docs), heads, slice(at, at))

    def _merge_run(self, lo: int, hi: int, progress: bool) -> None:
        entries = self._manifest.segments[lo:hi]
        readers = [self._reader(e) for e in entries]
        token_ids = np.concatenate([r.tokens(0, r.num_tokens) for r in readers])
        entry = SegmentMeta(
            name="",
            token_start=entries[0].token_start,
            num_tokens=int(token_ids.size),
            doc_start=entries[0].doc_start,
            num_docs=sum(e.num_docs for e in entries),
            num_postings=sum(e.num_postings for e in entries),
            checksum="",
            open_doc=entries[-1].open_doc,
        )
        docs = DocColumns.of(d for r in readers for d in r.docs())
        heads = merged_heads(readers, self.heads, progress=progress)
        self._publish(entry, token_ids, docs, heads, slice(lo, hi))

    def merge(self, max_segments_per_tier: int = 8, *, into_one: bool = False, progress: bool = False) -> int:
        """Tiered merge: segments fall in tiers by size (factor ``max_segments_per_tier``); while a run of
        that many adjacent segments shares a tier, it becomes one segment. ``into_one`` merges everything;
        ``progress`` shows a bar per merge. Returns how many old segments were merged away."""
        self._require_write()
        m = max(2, int(max_segments_per_tier))
        merged = 0
        while True:
            sizes = [e.num_tokens for e in self._manifest.segments][: self._closed_prefix()]
            run = ((0, len(sizes)) if len(sizes) > 1 else None) if into_one else pick_merge_run(sizes, m)
            if run is None:
                return merged
            self._merge_run(*run, progress)
            merged += run[1] - run[0]

    def garbage_collect(self) -> GcReport:
        """Delete the segment folders no live reader needs: those that neither the current manifest nor the
        manifest of a generation a live reader holds lists (merged-away or dropped segments once their readers
        moved on, closed or died; temp folders; crash leftovers). Lease files of readers that are gone and
        manifest copies of generations nobody holds go too."""
        self._require_write()
        if not manifest_copy(self.path, self.generation).is_file():  # written before copies were kept
            _write_json(manifest_copy(self.path, self.generation), self._manifest.to_json())
        leased = sweep_leases(self.path, self.generation)
        in_use = segments_in_use(self.path, self._manifest, leased)
        live = {s.name for s in self._manifest.segments}
        deleted, pending = [], []
        seg_root = self.path / INDEX_ROOT / SEGMENTS_DIR
        for child in sorted(seg_root.iterdir()) if seg_root.is_dir() else ():
            if not child.is_dir() or child.name in live:
                continue
            temp = child.name.startswith(SEGMENT_TMP_PREFIX)  # never listed: a writer died writing it
            if (child.name in in_use) if in_use is not None else not temp:
                pending.append(child.name)  # a live reader's generation lists it: the next collection
                continue
            rmtree(child)
            deleted.append(child.name)
        prune_manifest_copies(self.path, leased | {self.generation})
        for stray in self.path.glob(f".{INDEX_MANIFEST}.*.tmp") if isinstance(self.path, Path) else ():
            stray.unlink(missing_ok=True)
        self.last_gc = GcReport(deleted, pending, sorted(leased))
        return self.last_gc
