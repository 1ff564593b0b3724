"""Where an index lives: a local folder (a ``pathlib.Path``, read through files, seeks and memory maps) or
any fsspec URL (``s3://``, ``gs://``, ``az://``, ``memory://`` ...), a :class:`Location`.

A :class:`Location` offers the part of ``pathlib`` the index code uses (``/``, ``name``, ``parent``,
``exists``, ``is_file``, ``is_dir``, ``iterdir``, ``read_bytes``, ``read_text``, ``unlink``, ``mkdir``) over
fsspec, plus what object storage needs: :meth:`Location.write_bytes` is one PUT (an object store replaces an
object atomically, so no temp name and no rename), :meth:`Location.zarr_store` is Zarr's own
``FsspecStore``, :meth:`Location.local_copy` mirrors a small folder (the BM25 files, which bm25s reads from a
local folder) into a per-process temp folder. The module functions (:func:`write_json`, :func:`rmtree`,
:func:`move_dir`, :func:`zarr_store`, :func:`is_local`) take either kind, so callers keep one code path and
local paths keep exactly their previous behaviour.

Credentials and endpoints come from the usual environment of each backend (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``GOOGLE_APPLICATION_CREDENTIALS`` ...),
and/or fsspec storage options: ``$S3ATTN_STORAGE_OPTIONS`` (a JSON object) or the CLIs'
``--storage-options JSON`` (:func:`set_storage_options`).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from s3attn.errors import S3Error
from s3attn.paths import atomic_write_json, publish_dir

logger = logging.getLogger(__name__)

STORAGE_OPTIONS_ENV = "S3ATTN_STORAGE_OPTIONS"
"""Environment variable: a JSON object of fsspec storage options used for every URL (``--storage-options``
overrides it)."""
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_options: dict[str, Any] | None = None  # set by set_storage_options (the CLIs' --storage-options)


# ---- storage options -----------------------------------------------------------------------------------------
def parse_storage_options(text: str, option: str = "--storage-options") -> dict[str, Any]:
    """A JSON object of storage options; S3Error naming ``option`` when it is not one."""
    try:
        value = json.loads(text)
    except ValueError as err:
        raise S3Error(f"{option}: not JSON ({err}); pass an object such as '{{\"anon\": false}}'") from None
    if not isinstance(value, dict):
        raise S3Error(f"{option}: must be a JSON object, not {type(value).__name__}")
    return value


def set_storage_options(options: dict[str, Any] | str | None) -> None:
    """Use ``options`` (a dict or its JSON) for every URL opened from now on; None: back to the environment."""
    global _options
    _options = parse_storage_options(options) if isinstance(options, str) else options


def storage_options() -> dict[str, Any]:
    """The options in effect: :func:`set_storage_options`, else ``$S3ATTN_STORAGE_OPTIONS``, else none."""
    if _options is not None:
        return dict(_options)
    env = os.environ.get(STORAGE_OPTIONS_ENV, "").strip()
    return parse_storage_options(env, f"${STORAGE_OPTIONS_ENV}") if env else {}


def is_url(target: object) -> bool:
    """True for an fsspec URL (``scheme://...``; ``file://`` counts as a local path) or a Location."""
    if isinstance(target, Location):
        return True
    return isinstance(target, str) and bool(_URL.match(target)) and not target.startswith("file://")


def index_location(
    target: str | os.PathLike | Location, options: dict[str, Any] | None = None
) -> Path | Location:
    """``target`` as the index code holds it: a local path stays a ``Path`` (the fast local reader); a URL
    becomes a :class:`Location` (with ``options``, else :func:`storage_options`)."""
    if isinstance(target, Location):
        return target
    if is_url(target):
        return Location(str(target), options)
    text = os.fspath(target)
    return Path(text[len("file://") :] if text.startswith("file://") else text)


def is_local(target: Path | Location) -> bool:
    return not isinstance(target, Location)


# ---- Location ------------------------------------------------------------------------------------------------
class Location:
    """A file or folder behind an fsspec URL, with the subset of ``pathlib.Path`` the index code uses."""

    is_local = False

    def __init__(self, url: str, options: dict[str, Any] | None = None, *, _fs: Any = None) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.options = dict(storage_options() if options is None else options)
        if _fs is None:
            try:
                _fs, path = fsspec.url_to_fs(self.url, **self.options)
            except (ImportError, ValueError, TypeError) as err:
                raise S3Error(
                    f"{self.url}: cannot open this URL ({err}); check it and --storage-options"
                ) from None
        else:
            path = _fs._strip_protocol(self.url)
        self.fs, self.fs_path = _fs, path.rstrip("/") or "/"
        self._listed: dict[str, Any] | None = None  # what the listing that found this child said of it

    # ---- naming --------------------------------------------------------------------------------------
    def __truediv__(self, name: str) -> Location:
        return Location(f"{self.url}/{name}", self.options, _fs=self.fs)

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        return Location(self.url.rsplit("/", 1)[0], self.options, _fs=self.fs)

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"Location({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __lt__(self, other: Location) -> bool:
        return self.url < other.url

    def __fspath__(self) -> str:
        """A local path holding this file's or folder's content (:meth:`local_copy`), for code that needs
        one (bm25s loads from a local folder)."""
        return str(self.local_copy())

    # ---- reading -------------------------------------------------------------------------------------
    def _fresh(self) -> Any:
        """The filesystem with no stale listing of this path (fsspec caches directory listings)."""
        self.fs.invalidate_cache(self.fs_path)
        return self.fs

    def info(self) -> dict[str, Any] | None:
        try:
            return self._fresh().info(self.fs_path)
        except FileNotFoundError:
            return None

    def exists(self) -> bool:
        return self.info() is not None

    def is_file(self) -> bool:
        info = self._listed or self.info()
        return info is not None and info.get("type") == "file"

    def is_dir(self) -> bool:
        info = self._listed or self.info()
        return info is not None and info.get("type") == "directory"

    def iterdir(self) -> Iterator[Location]:
        """The children (files and folders), as Locations, in name order; none when this is no folder. Each
        knows its type from the listing (``is_file`` / ``is_dir`` ask no more)."""
        try:
            found = self._fresh().ls(self.fs_path, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return iter(())
        own = self.fs_path.rstrip("/")
        kids = {}
        for info in found:
            name = info["name"].rstrip("/")
            if name != own:
                kids[name.rsplit("/", 1)[-1]] = info
        out = []
        for name in sorted(kids):
            child = self / name
            child._listed = kids[name]
            out.append(child)
        return iter(out)

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.fs_path)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def modified(self) -> float | None:
        """When the object was last written (seconds since the epoch), None when the store does not say."""
        info = self._listed or self.info() or {}
        for key in ("LastModified", "mtime", "created", "updated", "last_modified"):
            value = info.get(key)
            if isinstance(value, _dt.datetime):
                return value.timestamp()
            if isinstance(value, int | float):
                return float(value)
            if isinstance(value, str):
                with contextlib.suppress(ValueError):
                    return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        return None

    def file_sizes(self) -> dict[str, int]:
        """Size of every object under this folder, by path relative to it."""
        found = self._fresh().find(self.fs_path, detail=True)
        cut = len(self.fs_path.rstrip("/")) + 1
        return {name[cut:]: int(info.get("size") or 0) for name, info in found.items()}

    # ---- writing -------------------------------------------------------------------------------------
    def write_bytes(self, data: bytes) -> None:
        """One PUT: readers see the old object or the new one, never part of it."""
        self.fs.pipe_file(self.fs_path, bytes(data))

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.fs_path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        """Folders are implied by the objects under them on object stores; made where the backend has them."""
        with contextlib.suppress(FileExistsError):
            self.fs.makedirs(self.fs_path, exist_ok=True)

    def rmtree(self) -> None:
        """Remove the folder and everything under it (nothing when it is absent)."""
        with contextlib.suppress(FileNotFoundError):
            if self._fresh().exists(self.fs_path):
                self.fs.rm(self.fs_path, recursive=True)
        self.fs.invalidate_cache(self.fs_path)

    def upload_dir(self, local: Path, *, last: str | None = None) -> None:
        """Copy the files of the local folder ``local`` here (one PUT each; the file named ``last`` after
        every other, so it is the commit point), then remove objects here that ``local`` does not hold."""
        names = sorted(p.name for p in Path(local).iterdir() if p.is_file())
        for name in sorted(names, key=lambda n: n == last):
            (self / name).write_bytes((Path(local) / name).read_bytes())
        for child in self.iterdir():
            if child.name not in names and child.is_file():
                child.unlink(missing_ok=True)

    def zarr_store(self, *, read_only: bool) -> Any:
        """Zarr's own fsspec store rooted here."""
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(self.url, storage_options=self.options, read_only=read_only)

    # ---- local copies --------------------------------------------------------------------------------
    def local_copy(self) -> Path:
        """This file or folder mirrored into this process's temp folder (removed at exit), fetched again
        when what is stored here changed (listing, sizes, ETags / times) since the last copy."""
        key = hashlib.sha1(self.url.encode()).hexdigest()[:16]
        dest = _mirror_root() / key / self.name
        _MIRRORED[str(dest)] = self.url
        listing = self._listing()
        stamp = dest.parent / ".listing.json"
        if dest.exists() and stamp.is_file() and stamp.read_text() == listing:
            return dest
        tmp = dest.parent / f".{self.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        if self.is_file():
            tmp.write_bytes(self.read_bytes())
            os.replace(tmp, dest)
        else:
            tmp.mkdir()
            for rel in self.file_sizes():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes((self / rel).read_bytes())
            publish_dir(tmp, dest)
        stamp.write_text(listing)
        return dest

    def _listing(self) -> str:
        """What identifies the stored content: every object's name, size and ETag (or time)."""
        fs = self._fresh()
        found = fs.find(self.fs_path, detail=True) if fs.isdir(self.fs_path) else {}
        if not found and fs.exists(self.fs_path):
            found = {self.fs_path: fs.info(self.fs_path)}
        rows = [
            (n, int(i.get("size") or 0), str(i.get("ETag") or i.get("LastModified") or i.get("mtime") or ""))
            for n, i in sorted(found.items())
        ]
        return json.dumps(rows)


_MIRROR: list[Path] = []
_MIRRORED: dict[str, str] = {}  # local copy -> the URL it mirrors (for messages)


def _mirror_root() -> Path:
    if not _MIRROR:
        root = Path(tempfile.mkdtemp(prefix="s3attn-remote-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _MIRROR.append(root)
    return _MIRROR[0]


def shown(path: Path | Location) -> str:
    """How to name ``path`` in a message: the URL a local copy mirrors, else the path itself."""
    text = str(path)
    for copy, url in _MIRRORED.items():
        if text == copy or text.startswith(copy + os.sep):
            return url + text[len(copy) :]
        parent = str(Path(copy).parent)
        if text == parent:
            return url.rsplit("/", 1)[0]
    return text


# ---- either kind -----------------------------------------------------------------------------------------
def write_json(target: Path | Location, obj: object) -> None:
    """Write ``obj`` as JSON atomically: temp file and rename locally, one PUT on object storage."""
    if isinstance(target, Location):
        target.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    else:
        atomic_write_json(target, obj)


def rmtree(target: Path | Location) -> None:
    """Remove a folder and its content; nothing when it is absent."""
    if isinstance(target, Location):
        target.rmtree()
    else:
        shutil.rmtree(target, ignore_errors=True)


def move_dir(src: Path | Location, dst: Path | Location) -> None:
    """Move a folder: one rename locally; on object storage a copy of every object, then a delete. The objects
    are listed and copied one by one: fsspec's recursive ``mv`` also copies the folder "keys" it infers, which
    S3 does not hold (NoSuchKey)."""
    if isinstance(src, Location) and isinstance(dst, Location):
        fs = src.fs
        fs.invalidate_cache()  # a listing cached before the folder changed would name deleted objects
        base = src.fs_path.rstrip("/")
        files = fs.find(base)
        if files:
            fs.copy(files, [dst.fs_path.rstrip("/") + f[len(base) :] for f in files])
            fs.rm(files)
        fs.invalidate_cache()
    else:
        os.replace(src, dst)


def zarr_store(target: Path | Location, *, read_only: bool = False) -> Any:
    """The Zarr store of the group at ``target``: ``LocalStore`` for a path, ``FsspecStore`` for a URL."""
    if isinstance(target, Location):
        return target.zarr_store(read_only=read_only)
    from zarr.storage import LocalStore

    return LocalStore(target, read_only=read_only)


def file_sizes(target: Path | Location) -> dict[str, int]:
    """Size of every file under the folder ``target``, by path relative to it."""
    if isinstance(target, Location):
        return target.file_sizes()
    out = {}
    for dirpath, _dirs, files in os.walk(target):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(target))] = p.stat().st_size
    return out


STORAGE_ERROR_MODULES = ("botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "google", "adlfs", "azure")


def storage_error(err: BaseException) -> S3Error | None:
    """A one-line S3Error for what an object-store client raised (no credentials, endpoint unreachable,
    access denied ...), None when ``err`` comes from elsewhere."""
    module = type(err).__module__ or ""
    if module.split(".")[0] not in STORAGE_ERROR_MODULES:
        return None
    text = " ".join(str(err).split())[:200]
    return S3Error(
        f"object storage: {type(err).__name__}: {text}; check the URL, credentials (AWS_ACCESS_KEY_ID ...) "
        "and endpoint (AWS_ENDPOINT_URL or --storage-options)"
    )


def refresh_copy(target: Location) -> None:
    """Fetch ``target`` again when this process holds a local copy of it and the stored content changed."""
    key = hashlib.sha1(target.url.encode()).hexdigest()[:16]
    if _MIRROR and (_MIRROR[0] / key / target.name).exists():
        target.local_copy()
