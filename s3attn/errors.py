"""One error type for bad input (and its subclass for a damaged index), and the CLI wrapper that turns it
into one line and exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., int | None])


class S3Error(Exception):
    """Bad input or state the user can fix. The message names the file or option and what to do."""


class IndexCorruptError(S3Error):
    """A file of an index is damaged or missing (bytes flipped, cut short, emptied or deleted).

    Raised where the index is read, instead of the low-level error (``OSError``, ``ValueError``,
    ``KeyError``, a JSON, UTF-8, Blosc or zarr error). ``index`` is the index folder, ``where`` the damaged
    segment, array or file, ``reason`` what was found, all three also in the one-line message."""

    index: str = ""
    where: str = ""
    reason: str = ""


READ_ERRORS = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, RuntimeError, MemoryError)
"""What reading a damaged file raises: I/O errors, cut-short files (``EOFError``), undecodable JSON, UTF-8,
``.npy`` or Parquet (``ValueError``s), zarr's errors (``ValueError``s), missing keys and nodes, fields of
the wrong type, failed Blosc decompression (``RuntimeError``), a size field flipped to something huge."""

REASON_CHARS = 200
"""The longest ``reason`` an :class:`IndexCorruptError` message quotes."""


def one_line(reason: object) -> str:
    """``reason`` on one line (an exception as ``Type: message``), at most ``REASON_CHARS`` characters."""
    if isinstance(reason, BaseException):
        text = str(reason).strip()
        reason = f"{type(reason).__name__}: {text}" if text else type(reason).__name__
    text = " ".join(str(reason).split())
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."


def index_damaged(index: object, where: str, reason: object, hint: str = "") -> IndexCorruptError:
    """The :class:`IndexCorruptError` for ``where`` (a segment, array or file) of the index ``index``:
    ``INDEX: WHERE is damaged (REASON); HINT``, the hint by default ``run s3-index verify INDEX``."""
    err = IndexCorruptError(
        f"{index}: {where} is damaged ({one_line(reason)}); {hint or f'run s3-index verify {index}'}"
    )
    err.index, err.where, err.reason = str(index), where, one_line(reason)
    return err


def cli_entry(prog: str) -> Callable[[F], F]:
    """Decorate a ``main()``: an ``S3Error`` prints ``prog: error: message`` and exits 2, no traceback."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except S3Error as err:
                print(f"{prog}: error: {err}", file=sys.stderr)
                raise SystemExit(EXIT_USAGE) from None
            except KeyboardInterrupt:
                print(f"{prog}: interrupted; nothing half-written was kept", file=sys.stderr)
                raise SystemExit(130) from None

        return run  # type: ignore[return-value]

    return wrap
