"""Generation leases: readers of a folder of immutable generations (an index: one manifest generation each)
hold a shared ``flock`` on ``leases/gen-NNNNNN.lock`` while they read generation NNNNNN, and the one writer
deletes only what no held generation needs (Lucene's deletion policy with reader references; tantivy's
searcher generations). Core, so that the index reader and the writer share it; it knows nothing of what a
generation holds (``index_builder.reader.lease_current`` and ``IndexWriter.garbage_collect`` do).

Protocol (see index_builder/SCHEMA.md, "Generations and leases"): a reader takes ``LOCK_SH`` on its
generation's file (created if missing) and keeps the descriptor open; the last reader to let go removes the
file (and ``leases/`` when it is empty). The writer tests each lease file with a non-blocking ``LOCK_EX``:
held = leased; not held = its readers are gone (closed, or killed: the kernel drops the locks of a dead
process), and the file is removed. Whoever removes a lease file holds ``LOCK_EX`` on it, and a reader checks
after locking that the path still names the file it locked, so no lease is ever taken on a removed file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from pathlib import Path

from s3attn.constants import (
    INDEX_LEASE_PREFIX,
    INDEX_LEASE_SUFFIX,
    INDEX_LEASES_DIR,
    INDEX_MANIFEST_COPY_PREFIX,
    INDEX_MANIFEST_COPY_SUFFIX,
    INDEX_MANIFESTS_DIR,
)
from s3attn.errors import S3Error
from s3attn.storage import Location, index_location

logger = logging.getLogger(__name__)

MAX_TRIES = 1000  # attempts before giving up (each retry means the folder changed meanwhile)
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)
REMOTE_GRACE_ENV = "S3ATTN_REMOTE_GC_GRACE_S"
REMOTE_GRACE_S = 3600.0
"""Object storage has no cross-process locks, so no reader leases there: a generation counts as leased for
this many seconds after the next one replaced it (``$S3ATTN_REMOTE_GC_GRACE_S`` overrides it); a reader of
an index on object storage must ``refresh()`` or reopen within that time."""


def lease_file(index: Path | Location, generation: int) -> Path | Location:
    return (
        index_location(index) / INDEX_LEASES_DIR / f"{INDEX_LEASE_PREFIX}{generation:06d}{INDEX_LEASE_SUFFIX}"
    )


def manifest_copy(index: Path | Location, generation: int) -> Path | Location:
    """Where the writer keeps the manifest of ``generation`` while it is current or leased."""
    name = f"{INDEX_MANIFEST_COPY_PREFIX}{generation:06d}{INDEX_MANIFEST_COPY_SUFFIX}"
    return index_location(index) / INDEX_MANIFESTS_DIR / name


def _number(name: str, prefix: str, suffix: str) -> int | None:
    """NNNNNN of ``<prefix>NNNNNN<suffix>``, else None."""
    core = name[len(prefix) : len(name) - len(suffix)]
    ok = name.startswith(prefix) and name.endswith(suffix) and core.isdigit()
    return int(core) if ok else None


def _same_file(fd: int, path: Path) -> bool:
    """True when ``path`` still names the file open as ``fd``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fs = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fs.st_dev, fs.st_ino)


class Lease:
    """A shared lock on ``leases/gen-NNNNNN.lock``, held while a reader reads generation NNNNNN."""

    def __init__(self, index: Path, generation: int, fd: int) -> None:
        self.index, self.generation, self._fd = Path(index), int(generation), fd

    @classmethod
    def take(cls, index: Path | Location, generation: int) -> Lease | None:
        """Lease ``generation``; None when the index folder cannot be written (a read-only copy, which no
        writer changes either) or lies on object storage (no locks there: see ``REMOTE_GRACE_S``)."""
        if isinstance(index, Location):
            return None
        path = lease_file(index, generation)
        for _ in range(MAX_TRIES):
            try:
                path.parent.mkdir(exist_ok=True)
                fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)  # flock needs no write access
            except FileNotFoundError:  # leases/ was removed between the two calls (or the index is gone)
                if not Path(index).is_dir():
                    raise S3Error(f"{index}: the index folder is gone; open it again") from None
                continue
            except OSError as err:
                if err.errno in _READ_ONLY:
                    return None
                raise
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a collector tests the file
            if _same_file(fd, path):
                return cls(index, generation, fd)
            os.close(fd)  # removed while we waited: lease the file that replaces it
        raise S3Error(f"{path}: could not lease generation {generation}; try again")

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Let go of the lease; the last holder removes the lease file (and ``leases/`` when empty)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        path = lease_file(self.index, self.generation)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # succeeds only when no other reader holds it
            if _same_file(fd, path):
                path.unlink()
                with contextlib.suppress(OSError):
                    path.parent.rmdir()
        except OSError:  # BlockingIOError: other readers still hold it; they remove it
            pass
        finally:
            os.close(fd)


# ---- the writer's side: which generations are leased, what they need --------------------------------------
def sweep_leases(index: Path | Location, current: int | None = None) -> set[int]:
    """Generations that live readers hold. Lease files that nobody holds (their readers closed or died) are
    removed. On object storage (``current``: the current generation): the generations replaced less than
    ``REMOTE_GRACE_S`` ago (:func:`recent_generations`)."""
    if isinstance(index, Location):
        return recent_generations(index, current)
    folder = Path(index) / INDEX_LEASES_DIR
    leased: set[int] = set()
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        gen = _number(path.name, INDEX_LEASE_PREFIX, INDEX_LEASE_SUFFIX)
        if gen is None:
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # its last reader let go meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            leased.add(gen)
        else:
            if _same_file(fd, path):
                path.unlink()
        finally:
            os.close(fd)
    with contextlib.suppress(OSError):
        folder.rmdir()  # only when empty
    return leased


def remote_grace() -> float:
    """``REMOTE_GRACE_S``, or ``$S3ATTN_REMOTE_GC_GRACE_S`` when set."""
    try:
        return float(os.environ.get(REMOTE_GRACE_ENV, REMOTE_GRACE_S))
    except ValueError:
        raise S3Error(f"${REMOTE_GRACE_ENV}: not a number of seconds") from None


def recent_generations(index: Location, current: int | None) -> set[int]:
    """Object storage: the generations g whose successor's manifest copy (written when g stopped being
    current) is younger than the grace period, or of unknown age; they count as leased."""
    folder = index / INDEX_MANIFESTS_DIR
    copies = {}
    for child in folder.iterdir():
        gen = _number(child.name, INDEX_MANIFEST_COPY_PREFIX, INDEX_MANIFEST_COPY_SUFFIX)
        if gen is not None:
            copies[gen] = child
    now, grace = time.time(), remote_grace()
    recent = set()
    for gen in sorted(copies):
        after = copies.get(gen + 1)
        if current is not None and gen >= current or after is None:
            continue
        written = after.modified()
        if written is None or now - written < grace:
            recent.add(gen)
    return recent


def prune_manifest_copies(index: Path | Location, keep: set[int]) -> None:
    """Remove kept manifests of generations not in ``keep`` (and temp files of interrupted writes)."""
    folder = index_location(index) / INDEX_MANIFESTS_DIR
    for path in folder.iterdir() if folder.is_dir() else ():
        gen = _number(path.name, INDEX_MANIFEST_COPY_PREFIX, INDEX_MANIFEST_COPY_SUFFIX)
        if gen not in keep and path.is_file():
            path.unlink(missing_ok=True)
