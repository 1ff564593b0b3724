"""Built-in passages for ``multidoc_qa``: 40 short factual texts about invented places, people and things.

Written for this project (public domain), so an answer can never come from a model's memory. The text is
package data, ``data/passages.txt`` (UTF-8): one passage per block, blocks separated by a blank line, each
block a title line and then the passage on one line.
"""

from __future__ import annotations

import functools
from importlib import resources

PASSAGES_FILE = "passages.txt"


@functools.lru_cache(maxsize=1)
def _passages() -> tuple[tuple[str, str], ...]:
    text = resources.files("s3attn.evaluation").joinpath("data", PASSAGES_FILE).read_text(encoding="utf-8")
    blocks = [b for b in text.strip("\n").split("\n\n") if b.strip()]
    return tuple((title, body) for title, body in (b.split("\n", 1) for b in blocks))


def public_domain_passages() -> list[tuple[str, str]]:
    """40 short (120-150 words) factual passages about invented places, people and things, written for
    this project (so answers cannot come from model memory); (title, text) pairs for ``multidoc_qa``."""
    return list(_passages())
