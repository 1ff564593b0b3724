"""``IndexStore``: the posting-list index on disk, as Lucene-style immutable segments in one Zarr v3 group.

Crash safety: a segment is written under ``segments/.tmp-<uuid>``, renamed to ``segments/seg-NNNNNN`` when
complete, and only then listed in ``manifest.json`` (atomic rename). The manifest is the one source of truth;
folders it does not list are garbage, removed by ``garbage_collect`` (run whenever the index is opened for
writing). One writer at a time holds an fcntl lock on ``index.lock``; readers take no lock and see the
segments live when they opened the index.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as _dt
import fcntl
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.storage import LocalStore

from s3attn.constants import (
    INDEX_FORMAT_VERSION,
    INDEX_KIND,
    INDEX_LOCK,
    INDEX_MANIFEST,
    INDEX_ROOT,
    INDEX_TOKENS_ARRAY,
    SEGMENT_TMP_PREFIX,
    SEGMENTS_DIR,
)
from s3attn.errors import S3Error
from s3attn.index_builder.chunks import ChunkReader
from s3attn.index_builder.schema import (
    CHECKSUM_ALGO,
    IDENTITY_ATTRS,
    REQUIRED_ATTRS,
    TOKEN_DTYPE,
    DocRecord,
    Postings,
    SegmentData,
    disk_usage,
    doc_json,
    empty_manifest,
    read_manifest,
    segment_checksum,
    segment_name,
    segment_path,
)
from s3attn.index_builder.segment import (
    SegmentReader,
    build_head_postings,
    check_segment_data,
    merged_heads,
    pick_merge_run,
    read_postings,
    verify_segment,
    write_segment_arrays,
)
from s3attn.paths import atomic_write_json


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v))


def _is_empty_dir(path: Path) -> bool:
    return not any(p.name != INDEX_LOCK for p in path.iterdir())


class IndexStore:
    """An index folder opened for reading (``open``) or for writing (``create`` / ``open(write=True)``)."""

    def __init__(self, path: Path, root: zarr.Group, manifest: dict, lock_fd: int | None) -> None:
        self.path = path
        self._root = root
        self._manifest = manifest
        self._lock_fd = lock_fd
        self.attrs: dict = dict(root.attrs.asdict())
        self._readers: dict[str, SegmentReader] = {}
        self._chunks = ChunkReader()  # decoded posting chunks, shared by every query on this store
        self._reset_caches()

    # ---- opening ---------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, attrs: dict) -> IndexStore:
        """Create an empty index at ``path``, or reopen for writing the same index (same model/SAE/layers/k)."""
        path = Path(path)
        missing = [k for k in REQUIRED_ATTRS if k not in attrs]
        if missing:
            raise ValueError(f"index attrs lack {missing}")
        if path.exists() and not path.is_dir():
            raise S3Error(f"{path}: is a file, not an index folder; choose a folder")
        if (path / INDEX_MANIFEST).exists():
            store = cls.open(path, write=True)
            for key in IDENTITY_ATTRS:
                if _jsonable(store.attrs.get(key)) != _jsonable(attrs[key]):
                    store.close()
                    raise S3Error(
                        f"{path}: holds an index with {key}={store.attrs.get(key)!r}, not {attrs[key]!r}; "
                        "choose another index folder or delete this one"
                    )
            return store
        if path.exists() and not _is_empty_dir(path) and not (path / INDEX_ROOT).is_dir():
            raise S3Error(
                f"{path}: folder is not empty and holds no s3attn index; choose an empty or new folder"
            )
        path.mkdir(parents=True, exist_ok=True)
        lock_fd = cls._lock(path)
        try:
            # an index.zarr without manifest is a create() that died before its manifest: nothing was live
            shutil.rmtree(path / INDEX_ROOT, ignore_errors=True)
            root_attrs = {
                **_jsonable(attrs),
                "kind": INDEX_KIND,
                "format_version": INDEX_FORMAT_VERSION,
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            }
            root = zarr.create_group(LocalStore(path / INDEX_ROOT), attributes=root_attrs)
            root.create_group(SEGMENTS_DIR)
            manifest = empty_manifest()
            atomic_write_json(path / INDEX_MANIFEST, manifest)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(path, root, manifest, lock_fd)

    @classmethod
    def open(cls, path: str | os.PathLike, *, write: bool = False) -> IndexStore:
        """Open an existing index; ``write=True`` takes the writer lock and removes crash leftovers."""
        path = Path(path)
        if not (path / INDEX_MANIFEST).is_file():
            raise S3Error(
                f"{path}: no s3attn index here ({INDEX_MANIFEST} missing); build one with s3-index build"
            )
        lock_fd = cls._lock(path) if write else None
        try:
            manifest = read_manifest(path)
            try:
                root = zarr.open_group(
                    LocalStore(path / INDEX_ROOT, read_only=not write), mode="r+" if write else "r"
                )
                kind = root.attrs.get("kind")
            except Exception as err:
                raise S3Error(
                    f"{path / INDEX_ROOT}: unreadable index group ({type(err).__name__}); rebuild the index"
                ) from None
            if kind != INDEX_KIND:
                raise S3Error(f"{path / INDEX_ROOT}: not an s3attn index (kind={kind!r}); rebuild the index")
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        store = cls(path, root, manifest, lock_fd)
        if write:
            store.garbage_collect()
        return store

    @staticmethod
    def _lock(path: Path) -> int:
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

    def close(self) -> None:
        """Release the writer lock (if held) and the chunk files held open for reads."""
        self._chunks.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> IndexStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # ---- state -----------------------------------------------------------------------------------------
    @property
    def segments(self) -> list[dict]:
        return [dict(s) for s in self._manifest["segments"]]

    @property
    def generation(self) -> int:
        return int(self._manifest["generation"])

    def _closed_prefix(self) -> int:
        """Number of leading segments that end on a document boundary (open tail excluded)."""
        segs = self._manifest["segments"]
        n = len(segs)
        while n > 0 and segs[n - 1].get("open_doc", False):
            n -= 1
        return n

    def has_open_tail(self) -> bool:
        """True when the last segments hold pieces of a document that no segment closed (a killed build)."""
        return self._closed_prefix() < len(self._manifest["segments"])

    def drop_open_tail(self) -> int:
        """Remove the open tail (manifest first, then the folders); returns the number of segments dropped."""
        self._require_write()
        keep = self._closed_prefix()
        dropped = self._manifest["segments"][keep:]
        if not dropped:
            return 0
        manifest = {
            **self._manifest,
            "segments": self._manifest["segments"][:keep],
            "generation": self.generation + 1,
        }
        atomic_write_json(self.path / INDEX_MANIFEST, manifest)
        self._manifest = manifest
        self._reset_caches()
        for e in dropped:
            shutil.rmtree(self._seg_dir(e["name"]), ignore_errors=True)
        return len(dropped)

    @property
    def num_tokens(self) -> int:
        return sum(int(s["num_tokens"]) for s in self._manifest["segments"])

    @property
    def num_docs(self) -> int:
        return sum(int(s["num_docs"]) for s in self._manifest["segments"])

    @property
    def heads(self) -> list[tuple[int, int]]:
        """Every (layer, kv head) the index holds postings for."""
        return [
            (int(layer), h) for layer in self.attrs["layers"] for h in range(int(self.attrs["num_kv_heads"]))
        ]

    def _reset_caches(self) -> None:
        live = {s["name"] for s in self._manifest["segments"]}
        self._readers = {n: r for n, r in self._readers.items() if n in live}
        self._starts = [int(s["token_start"]) for s in self._manifest["segments"]]
        self._df: dict[tuple[int, int], np.ndarray] = {}
        self._doc_keys: set[tuple[str, str]] | None = None

    def _reader(self, entry: dict) -> SegmentReader:
        r = self._readers.get(entry["name"])
        if r is None:
            group = self._root[segment_path(entry["name"])]
            r = SegmentReader(group, entry["token_start"], entry["num_tokens"])
            self._readers[entry["name"]] = r
        return r

    def _seg_dir(self, name: str) -> Path:
        return self.path / INDEX_ROOT / SEGMENTS_DIR / name

    def _require_write(self) -> None:
        if self._lock_fd is None:
            raise S3Error(f"{self.path}: index opened read-only; open it with write=True to change it")

    # ---- reading ---------------------------------------------------------------------------------------
    def documents(self) -> list[DocRecord]:
        return [d for e in self._manifest["segments"] for d in self._reader(e).docs()]

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
        segs = self._manifest["segments"]
        while start < end and i < len(segs):
            seg_start, seg_n = int(segs[i]["token_start"]), int(segs[i]["num_tokens"])
            stop = min(end, seg_start + seg_n)
            if stop > start:
                arr = self._reader(segs[i]).array(INDEX_TOKENS_ARRAY)
                parts.append(self._chunks.read(arr, [start - seg_start], [stop - start]).astype(TOKEN_DTYPE))
                start = stop
            i += 1
        return np.concatenate(parts) if parts else np.zeros(0, np.uint32)

    def doc_freq(self, layer: int, kv_head: int) -> np.ndarray:
        """int64 [F]: number of postings of each feature, over all live segments."""
        key = (int(layer), int(kv_head))
        df = self._df.get(key)
        if df is None:
            df = np.zeros(int(self.attrs["num_latents"]), dtype=np.int64)
            for entry in self._manifest["segments"]:
                df += np.diff(self._reader(entry).offsets(*key))
            self._df[key] = df
        return df

    def postings(self, layer: int, kv_head: int, features: np.ndarray) -> Postings:
        """All postings of ``features`` (any order, repeats allowed), grouped by slot, positions ascending.

        Per segment, each distinct feature's range of ``pos_gaps`` and ``act_u8`` is read by whole chunks
        (:class:`~s3attn.index_builder.chunks.ChunkReader`, decoded chunks cached); no per-posting loop.
        """
        layer, kv_head = int(layer), int(kv_head)
        num_f = int(self.attrs["num_latents"])
        features = np.asarray(features, dtype=np.int64).ravel()
        if features.size and (features.min() < 0 or features.max() >= num_f):
            raise ValueError(f"feature ids must lie in [0, {num_f})")
        readers = [self._reader(e) for e in self._manifest["segments"]]
        return read_postings(readers, layer, kv_head, features, self._chunks)

    def info(self) -> dict:
        """Sizes: documents, tokens, postings, segments, bytes on disk (total and per array kind)."""
        total, by_kind = disk_usage(self.path)
        postings = sum(int(s["num_postings"]) for s in self._manifest["segments"])
        return {
            "documents": self.num_docs,
            "tokens": self.num_tokens,
            "postings": postings,
            "segments": len(self._manifest["segments"]),
            "bytes_on_disk": total,
            "bytes_per_posting": total / postings if postings else math.nan,
            "bytes_by_array": by_kind,
        }

    def verify(self) -> list[str]:
        """Check every invariant of the index; returns one line per problem (empty list = sound)."""
        problems: list[str] = []
        expect_start, expect_doc = 0, 0
        num_f, k = int(self.attrs["num_latents"]), int(self.attrs["k"])
        for entry in self._manifest["segments"]:
            name = entry["name"]
            if int(entry["token_start"]) != expect_start or int(entry["doc_start"]) != expect_doc:
                problems.append(f"segment {name}: token_start/doc_start do not follow the previous segment")
            expect_start = int(entry["token_start"]) + int(entry["num_tokens"])
            expect_doc = int(entry["doc_start"]) + int(entry["num_docs"])
            if not (self._seg_dir(name) / "zarr.json").is_file():
                problems.append(f"segment {name}: listed in {INDEX_MANIFEST} but missing on disk")
                continue
            try:
                group = zarr.open_group(self._root.store, path=segment_path(name), mode="r")
                problems += [
                    f"segment {name}: {p}" for p in verify_segment(group, entry, self.heads, num_f, k)
                ]
            except Exception as err:
                problems.append(f"segment {name}: unreadable ({type(err).__name__}: {err})")
        return problems

    # ---- writing ---------------------------------------------------------------------------------------
    def _publish(
        self, seg_attrs: dict, token_ids: np.ndarray, heads: Any, replace: slice, extra: dict
    ) -> str:
        """Write a segment under a temp name, rename it into place, swap the manifest (last)."""
        name = segment_name(int(self._manifest["generation"]) + 1)
        tmp = f"{SEGMENT_TMP_PREFIX}{uuid.uuid4().hex}"
        final = self._seg_dir(name)
        published = False
        try:
            seg = self._root.create_group(segment_path(tmp))
            sums = write_segment_arrays(seg, token_ids, heads)
            seg.attrs.update({**seg_attrs, "checksums": sums, "checksum_algo": CHECKSUM_ALGO})
            shutil.rmtree(final, ignore_errors=True)  # unreferenced leftover of a crashed run
            os.replace(self._seg_dir(tmp), final)
            published = True
            entry = {
                "name": name,
                "token_start": int(seg_attrs["token_start"]),
                "num_tokens": int(seg_attrs["num_tokens"]),
                "checksum": segment_checksum(
                    sums, int(seg_attrs["token_start"]), int(seg_attrs["num_tokens"])
                ),
                **extra,
            }
            segs = list(self._manifest["segments"])
            segs[replace] = [entry]
            manifest = {
                **self._manifest,
                "segments": segs,
                "generation": int(self._manifest["generation"]) + 1,
            }
            atomic_write_json(self.path / INDEX_MANIFEST, manifest)
        except BaseException:
            shutil.rmtree(self._seg_dir(tmp), ignore_errors=True)
            if published:
                shutil.rmtree(final, ignore_errors=True)
            raise
        self._manifest = manifest
        self._reset_caches()
        return name

    def absorb(self, other: IndexStore) -> int:
        """Move every closed segment of ``other`` (a staging index of one rank, same attrs) to the end of
        this index: folders are renamed, token positions and doc ids rebased in the segment attrs (postings
        are segment-relative, so no array is rewritten), the manifest is swapped once, last. Returns the
        number of segments taken; a crash before the manifest swap leaves them unreferenced (garbage)."""
        self._require_write()
        entries = other.segments[: other._closed_prefix()]
        if not entries:
            return 0
        token_at = self.num_tokens
        next_doc = max((d.doc_id for d in self.documents()), default=-1) + 1
        first_doc = min((d.doc_id for d in other.documents()), default=0)
        gen = self.generation
        new_entries = []
        for i, e in enumerate(entries):
            name = f"{segment_name(gen + 1)}-{i:03d}"
            group = other._root[segment_path(e["name"])]
            attrs = group.attrs.asdict()
            shift = token_at - int(e["token_start"])
            docs = [
                {
                    **d,
                    "token_start": int(d["token_start"]) + shift,
                    "doc_id": int(d["doc_id"]) - first_doc + next_doc,
                }
                for d in attrs["docs"]
            ]
            group.attrs.update({"token_start": token_at, "docs": docs})
            os.replace(other._seg_dir(e["name"]), self._seg_dir(name))
            new_entries.append(
                {
                    **e,
                    "name": name,
                    "token_start": token_at,
                    "doc_start": self.num_docs + sum(x["num_docs"] for x in new_entries),
                    "checksum": segment_checksum(attrs["checksums"], token_at, int(e["num_tokens"])),
                }
            )
            token_at += int(e["num_tokens"])
        manifest = {
            **self._manifest,
            "segments": [*self._manifest["segments"], *new_entries],
            "generation": gen + 1,
        }
        atomic_write_json(self.path / INDEX_MANIFEST, manifest)
        self._manifest = manifest
        self._reset_caches()
        return len(new_entries)

    def add_segment(self, data: SegmentData, *, open_doc: bool = False) -> str:
        """Build the posting lists of ``data`` and publish them as a new segment; returns its name.

        ``open_doc``: the segment ends inside a document (a piece of a huge one) that a later segment
        closes; until then it is an open tail that ``drop_open_tail`` removes after a crash."""
        self._require_write()
        k = int(self.attrs["k"])
        token_ids = check_segment_data(data, self.heads, k, self.num_tokens)
        n, start = token_ids.size, int(data.token_start)
        num_f = int(self.attrs["num_latents"])
        heads = ((key, build_head_postings(*data.codes[key], num_f)) for key in self.heads)
        docs = [doc_json(d) for d in data.docs]
        seg_attrs = {"token_start": start, "num_tokens": n, "docs": docs}
        extra = {
            "doc_start": self.num_docs,
            "num_docs": len(docs),
            "num_postings": n * k * len(self.heads),
            "open_doc": bool(open_doc),
        }
        at = len(self._manifest["segments"])
        return self._publish(seg_attrs, token_ids, heads, slice(at, at), extra)

    def _merge_run(self, lo: int, hi: int) -> None:
        entries = self._manifest["segments"][lo:hi]
        readers = [self._reader(e) for e in entries]
        start = readers[0].token_start
        token_ids = np.concatenate([r.tokens(0, r.num_tokens) for r in readers])

        docs = [doc_json(d) for r in readers for d in r.docs()]
        seg_attrs = {"token_start": start, "num_tokens": int(token_ids.size), "docs": docs}
        extra = {
            "doc_start": int(entries[0]["doc_start"]),
            "num_docs": sum(int(e["num_docs"]) for e in entries),
            "num_postings": sum(int(e["num_postings"]) for e in entries),
            "open_doc": bool(entries[-1].get("open_doc", False)),
        }
        self._publish(seg_attrs, token_ids, merged_heads(readers, self.heads), slice(lo, hi), extra)
        for e in entries:  # no longer live: the manifest no longer names them
            shutil.rmtree(self._seg_dir(e["name"]), ignore_errors=True)

    def merge(self, max_segments_per_tier: int = 8, *, into_one: bool = False) -> int:
        """Tiered merge: segments fall in tiers by size (factor ``max_segments_per_tier``); while a run of
        that many adjacent segments shares a tier, it becomes one segment. ``into_one`` merges everything.
        Returns how many old segments were merged away."""
        self._require_write()
        m = max(2, int(max_segments_per_tier))
        merged = 0
        while True:
            sizes = [int(e["num_tokens"]) for e in self._manifest["segments"]][: self._closed_prefix()]
            run = ((0, len(sizes)) if len(sizes) > 1 else None) if into_one else pick_merge_run(sizes, m)
            if run is None:
                return merged
            self._merge_run(*run)
            merged += run[1] - run[0]

    def garbage_collect(self) -> None:
        """Delete segment folders the manifest does not list (temp folders, leftovers of a crash)."""
        self._require_write()
        live = {s["name"] for s in self._manifest["segments"]}
        seg_root = self.path / INDEX_ROOT / SEGMENTS_DIR
        if seg_root.is_dir():
            for child in seg_root.iterdir():
                if child.is_dir() and child.name not in live:
                    shutil.rmtree(child, ignore_errors=True)
        for stray in self.path.glob(f".{INDEX_MANIFEST}.*.tmp"):
            stray.unlink(missing_ok=True)


def doc_ranges(store: IndexStore) -> list[tuple[int, int, int]]:
    """(doc_id, start, end) per document, pieces of one document joined."""
    out: list[list[int]] = []
    for rec in store.documents():
        if out and out[-1][0] == rec.doc_id and out[-1][2] == rec.token_start:
            out[-1][2] = rec.token_start + rec.num_tokens
        else:
            out.append([rec.doc_id, rec.token_start, rec.token_start + rec.num_tokens])
    return [tuple(x) for x in out]  # type: ignore[misc]
