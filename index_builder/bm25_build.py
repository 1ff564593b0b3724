"""Building BM25 over passages (the writing side of ``bm25``): cut documents into overlapping passages,
index their texts, add passages (bm25s has no incremental add: a full rebuild from the stored texts), and
save the whole index to a temp folder renamed into place.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import bm25s
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from s3attn.constants import BM25_CHECKSUMS, BM25_FORMAT_VERSION, BM25_META, BM25_PASSAGES, BM25_TEXTS
from s3attn.errors import S3Error
from s3attn.index_builder.bm25 import STEMMER_NAME, STOPWORDS, BM25Index, Passage, file_checksums, stem_words
from s3attn.paths import atomic_write_json, publish_dir
from s3attn.storage import Location


def make_passages(
    doc_ranges: list[tuple[int, int, int]], passage_tokens: int = 128, stride: int = 64
) -> list[Passage]:
    """Overlapping windows inside each ``(doc_id, start, end)``; every document token is covered.

    Windows start at ``start, start + stride, ...``; the last one is aligned to end exactly at ``end``.
    A document shorter than ``passage_tokens`` is one passage. Empty documents give none.
    """
    if passage_tokens < 1 or stride < 1 or stride > passage_tokens:
        raise S3Error(
            f"make_passages: need 1 <= stride ({stride}) <= passage_tokens ({passage_tokens}) "
            "so that windows cover every token"
        )
    out: list[Passage] = []
    for doc_id, start, end in doc_ranges:
        doc_id, start, end = int(doc_id), int(start), int(end)
        if end <= start:
            continue
        last_start = max(start, end - passage_tokens)
        starts = list(range(start, last_start + 1, stride))
        if starts[-1] != last_start:
            starts.append(last_start)
        out.extend(Passage(doc_id, s, min(s + passage_tokens, end)) for s in starts)
    return out


class BM25Writer(BM25Index):
    """A :class:`BM25Index` being built: :meth:`build`, :meth:`add`, :meth:`save` (it searches too)."""

    # ---- build ----------------------------------------------------------------------------------------
    @classmethod
    def build(
        cls, passages: list[Passage], texts: list[str], *, k1: float = 1.5, b: float = 0.75
    ) -> BM25Writer:
        """Index ``texts[i]`` as the text of ``passages[i]`` (Lucene BM25, English stopwords, S-stemmer)."""
        if len(passages) != len(texts):
            raise S3Error(
                f"BM25Writer.build: {len(passages)} passages but {len(texts)} texts; pass one text each"
            )
        arr = np.asarray([tuple(p) for p in passages], dtype=np.int64).reshape(-1, 3)
        texts = [str(t) for t in texts]
        if not texts:
            return cls(arr, texts, None)
        tokens = bm25s.tokenize(texts, stopwords=STOPWORDS, stemmer=stem_words, show_progress=False)
        if not tokens.vocab:  # only stopwords / no words at all: nothing can match
            return cls(arr, texts, None)
        retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        retriever.index(tokens, show_progress=False)
        return cls(arr, texts, retriever)

    def add(self, passages: list[Passage], texts: list[str]) -> BM25Writer:
        """A new index over the old passages plus these (a full rebuild from the stored texts)."""
        old = [self.passage(i) for i in range(len(self))]
        params = {"k1": self.retriever.k1, "b": self.retriever.b} if self.retriever is not None else {}
        return BM25Writer.build(old + list(passages), self.texts + list(texts), **params)

    # ---- disk -----------------------------------------------------------------------------------------
    def save(self, folder: str | Path | Location) -> None:
        """Write the whole index into a temp folder next to ``folder``, then rename it into place. On object
        storage: written locally, then uploaded file by file, ``BM25_META`` (the checksums) last; a reader
        that loads meanwhile sees files that do not match it and loads again."""
        if isinstance(folder, Location):
            with tempfile.TemporaryDirectory(prefix="s3attn-bm25-") as tmp:
                self.save(Path(tmp) / folder.name)
                folder.upload_dir(Path(tmp) / folder.name, last=BM25_META)
            return
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
        try:
            if self.retriever is not None:
                self.retriever.save(str(tmp), show_progress=False)
            np.save(tmp / BM25_PASSAGES, self.passages_P3)
            pq.write_table(
                pa.table({"text": pa.array(self.texts, pa.string())}), tmp / BM25_TEXTS, compression="zstd"
            )
            meta = {
                "format_version": BM25_FORMAT_VERSION,
                "num_passages": len(self),
                "stopwords": STOPWORDS,
                "stemmer": STEMMER_NAME,
                "method": "lucene",
                "empty": self.retriever is None,
                BM25_CHECKSUMS: file_checksums(tmp),  # checked by BM25Index.load and s3-index verify
            }
            atomic_write_json(tmp / BM25_META, meta)
            publish_dir(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
