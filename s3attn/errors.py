"""One error type for bad input, and the CLI wrapper that turns it into one line and exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., int | None])


class S3Error(Exception):
    """Bad input or state the user can fix. The message names the file or option and what to do."""


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
