"""The BM25 index as one index generation sees it (:class:`BM25View`), for a Retriever that reads a snapshot.

There is one BM25 folder per index, rebuilt by the writer after it commits new segments (written to a temp
folder and renamed into place), so a reader's BM25 may cover more or fewer tokens than the generation it
reads. The view hides the passages that do not lie inside a document of that generation (the newer ones), so
every hit names a document the reader has; loading retries while the writer swaps the folder, and
:meth:`BM25View.refreshed` reloads it only when the folder was rebuilt.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from s3attn.constants import BM25_META
from s3attn.errors import S3Error
from s3attn.index_builder.bm25 import BM25Index, Hit

LOAD_TRIES = 6  # attempts to load while a writer swaps the folder (sleeping 10, 20, 40 ... ms between)

RangesLike = np.ndarray | list[tuple[int, int, int]]  # (doc_id, start, end) per document, sorted

Signature = tuple[int, int, int, int] | None  # (device, inode, mtime ns, size) of the BM25 meta file


def bm25_signature(folder: Path) -> Signature:
    """Identifies one build of the BM25 folder (each build writes a new meta file), None when absent."""
    try:
        st = os.stat(Path(folder) / BM25_META)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def load_consistent(folder: Path) -> tuple[BM25Index, Signature]:
    """Load the BM25 folder, again if a writer replaced it meanwhile (its files must be of one build)."""
    for attempt in range(LOAD_TRIES):
        sig = bm25_signature(folder)
        try:
            index = BM25Index.load(folder)
        except Exception:  # the folder was being swapped: missing files, or files of two builds
            if attempt == LOAD_TRIES - 1:
                raise
        else:
            if sig is not None and bm25_signature(folder) == sig:
                return index, sig
        time.sleep(0.01 * 2**attempt)
    raise S3Error(f"{folder}: the BM25 index keeps changing while it loads; try again")


class BM25View:
    """``index`` seen from a generation whose documents are ``doc_ranges`` ((doc_id, start, end), sorted)."""

    def __init__(self, folder: Path, index: BM25Index, sig: Signature, doc_ranges: RangesLike):
        self.folder, self.index, self.signature = Path(folder), index, sig
        self.ranges_D3 = ranges_D3 = np.asarray(doc_ranges, dtype=np.int64).reshape(-1, 3)
        p_P3 = index.passages_P3
        i_P = np.searchsorted(ranges_D3[:, 1], p_P3[:, 1], side="right") - 1
        doc_P3 = ranges_D3[np.maximum(i_P, 0)] if len(ranges_D3) else np.full_like(p_P3, -1)
        inside_P = (i_P >= 0) & (doc_P3[:, 0] == p_P3[:, 0]) & (p_P3[:, 2] <= doc_P3[:, 2])
        self.hidden = {tuple(p) for p in p_P3[~inside_P].tolist()}  # passages this generation lacks

    @classmethod
    def load(cls, folder: Path, doc_ranges: RangesLike) -> BM25View:
        return cls(folder, *load_consistent(folder), doc_ranges)

    def refreshed(self, doc_ranges: RangesLike) -> BM25View:
        """This view for a (new) generation's ``doc_ranges``: the BM25 folder is loaded again only when the
        writer rebuilt it; ``self`` when nothing changed."""
        ranges_D3 = np.asarray(doc_ranges, dtype=np.int64).reshape(-1, 3)
        if bm25_signature(self.folder) != self.signature:
            return BM25View.load(self.folder, ranges_D3)
        if np.array_equal(ranges_D3, self.ranges_D3):
            return self
        return BM25View(self.folder, self.index, self.signature, ranges_D3)

    def __len__(self) -> int:
        return len(self.index) - len(self.hidden)

    def search(self, question: str, top_k: int) -> list[Hit]:
        """:meth:`BM25Index.search` over the passages of this generation's documents."""
        hits = self.index.search(question, top_k + len(self.hidden))
        return [h for h in hits if tuple(h.passage) not in self.hidden][:top_k]
