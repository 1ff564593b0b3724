"""Logging of s3attn: library modules log, the command-line entry points show it.

Every library module logs through ``logger = logging.getLogger(__name__)`` (all below the ``s3attn`` logger)
and prints nothing. Without set-up, Python shows only warnings and errors (on stderr, the message alone). A
CLI calls :func:`setup_cli_logging` once: it attaches one stderr handler to the ``s3attn`` logger, showing
INFO and above (DEBUG with ``verbose``) as the bare message, warnings as ``warning: message``.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "s3attn"


class _StderrHandler(logging.StreamHandler):
    """A stream handler on whatever ``sys.stderr`` is when a record is written (not when the handler was
    made), so ``contextlib.redirect_stderr`` and test capture see the messages."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)  # StreamHandler.__init__ would bind today's sys.stderr

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr


class _CliFormatter(logging.Formatter):
    """``message`` for INFO and below, ``warning: message`` / ``error: message`` / ``critical: message``."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"{record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING else text


def setup_cli_logging(verbose: bool = False) -> logging.Logger:
    """Show the ``s3attn`` loggers' messages on stderr: INFO and above (DEBUG and above when ``verbose``).

    Idempotent: a second call replaces the handler of the first (so a CLI run in-process twice, as tests
    do, does not print every message twice). Returns the ``s3attn`` logger.
    """
    logger = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_CliFormatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    return logger
