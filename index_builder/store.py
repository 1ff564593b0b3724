"""``IndexStore``: the previous entry to an index, kept so that callers move at their own pace.

New code reads with ``reader.IndexReader.open(path)`` and writes with ``indexer.IndexWriter.open(path)`` /
``IndexWriter.create(path, attrs)``. ``IndexStore`` is the writer class with the old default:
``IndexStore.open(path)`` is read-only (its changing methods refuse), ``open(path, write=True)`` writes.
"""

from __future__ import annotations

import os

from s3attn.index_builder.indexer import IndexWriter
from s3attn.index_builder.reader import IndexReader, doc_ranges
from s3attn.storage import Location, index_location

__all__ = ["IndexReader", "IndexStore", "IndexWriter", "doc_ranges"]


class IndexStore(IndexWriter):
    """An index opened for reading (``open``) or for writing (``create`` / ``open(write=True)``)."""

    @classmethod
    def open(  # type: ignore[override]
        cls, path: str | os.PathLike | Location, *, write: bool = False
    ) -> IndexStore:
        """Open an existing index; ``write=True`` takes the writer lock and removes crash leftovers."""
        return cls._open(index_location(path), write=write)  # type: ignore[return-value]
