"""s3attn.logs: library messages reach stderr through the CLI handler, once, with warnings marked."""

from __future__ import annotations

import contextlib
import io
import logging

from s3attn.logs import LOGGER_NAME, setup_cli_logging


def test_cli_logging_shows_info_and_marks_warnings_once():
    log = logging.getLogger(f"{LOGGER_NAME}.some.module")
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            setup_cli_logging()
            setup_cli_logging()  # a second call replaces the handler: no double lines
            log.debug("hidden detail")
            log.info("building into X")
            log.warning("skipping bad.txt")
        assert buf.getvalue().splitlines() == ["building into X", "warning: skipping bad.txt"]
        buf2 = io.StringIO()
        with contextlib.redirect_stderr(buf2):
            setup_cli_logging(verbose=True)
            log.debug("now shown")
        assert buf2.getvalue().splitlines() == ["now shown"]
    finally:
        root = logging.getLogger(LOGGER_NAME)
        for h in list(root.handlers):
            root.removeHandler(h)
        root.setLevel(logging.NOTSET)
