"""Where things live on disk: the cache dir, atomic writes."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from s3attn.constants import CACHE_ENV


def cache_dir() -> Path:
    """``$S3ATTN_CACHE``, else ``$XDG_CACHE_HOME/s3attn``, else ``~/.cache/s3attn``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "s3attn"


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp name in the same folder, fsync, rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def publish_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written temp folder into place; an older folder at ``final_dir`` is replaced."""
    final_dir = Path(final_dir)
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)


def check_writable_dir(path: Path, option: str) -> Path:
    """Create ``path`` if needed and prove it writable, else raise S3Error naming ``option``."""
    from s3attn.errors import S3Error

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".s3attn-write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise S3Error(
            f"{option} {path}: not writable ({err.strerror}); choose a folder you can write to"
        ) from None
    return path
