"""Where things live on disk: the cache dir, atomic writes, temp folders published by rename.

``kill_point`` is a test-only crash hook (see its docstring); it does nothing unless ``S3ATTN_TEST_KILL_AT``
is set.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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
    old = final_dir.with_name(f".{final_dir.name}.old")
    if final_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    shutil.rmtree(old, ignore_errors=True)  # also one left by a process killed between the two renames


@contextmanager
def staged_dir(final_dir: Path) -> Iterator[Path]:
    """A fresh temp folder beside ``final_dir`` to write into; published there (``publish_dir``) when the
    block ends, removed if it raises (a killed process leaves it to the next ``fresh_temp_dir``)."""
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = fresh_temp_dir(final_dir)  # also removes those of earlier writes that were killed
    try:
        tmp.mkdir()
        yield tmp
        publish_dir(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows: never remove there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def fresh_temp_dir(final_dir: Path) -> Path:
    """This process's hidden temp folder next to ``final_dir`` (not yet created), for ``publish_dir``.

    Temp folders of ``final_dir`` left by processes that are gone (SIGKILL skips every cleanup) are removed;
    those of live processes stay.
    """
    final_dir = Path(final_dir)
    prefix = f".{final_dir.name}.tmp-"
    for entry in final_dir.parent.iterdir() if final_dir.parent.is_dir() else ():
        pid = entry.name[len(prefix) :]
        if entry.name.startswith(prefix) and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
    tmp = final_dir.with_name(f"{prefix}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


KILL_ENV = "S3ATTN_TEST_KILL_AT"  # test-only: see kill_point
_kill_counts: dict[str, int] = {}


def kill_point(point: str, count: int | None = None) -> None:
    """Test-only crash hook: SIGKILL this process at a named point when ``S3ATTN_TEST_KILL_AT=<point>:<n>``.

    The process dies the ``n``-th time ``point`` is reached in it, or, when the caller passes ``count`` (a
    progress value such as the LM step), when ``count == n``. tests/test_train_kill.py uses it to prove
    that training and the release write survive SIGKILL at exact places; unset, it does nothing.
    """
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return
    name, _, n = wanted.rpartition(":")
    if name != point:
        return
    if count is None:
        count = _kill_counts[point] = _kill_counts.get(point, 0) + 1
    if count == int(n):
        os.kill(os.getpid(), signal.SIGKILL)


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
