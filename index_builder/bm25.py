"""BM25 over overlapping passages in global token coordinates (bm25s, numpy backend): the reading side
(:class:`BM25Index`: load, search). Building and saving is ``bm25_build``.

Passages are windows of ``passage_tokens`` tokens every ``stride`` tokens inside each document, each indexed
with its text (the detokenized window). Tokenization: bm25s' regex (``\\b\\w\\w+\\b``, lowercase), its
English stopword list and a small suffix-stripping "S-stemmer" (plural forms only: ``-ies -> -y``,
``-es -> -e``, ``-s`` dropped; no extra dependency).

On disk (one folder, written to a temp folder and renamed into place)::

    <folder>/  bm25s files (data/indices/indptr .csc.index.npy, vocab.index.json, params.index.json)
               BM25_PASSAGES  int64 [P, 3] doc_id, start, end
               BM25_TEXTS     passage texts (parquet, zstd), so a rebuild needs no caller
               BM25_META      format version, passage count, tokenizer settings, crc32 of every other file

:meth:`BM25Index.load` checks the files against those checksums and raises ``IndexCorruptError`` naming a
damaged file; :func:`verify_bm25` is the BM25 part of ``s3-index verify``. Once checked, the score matrix and
the passage table are memory-mapped (read-only), as Lucene's ``MMapDirectory`` does: a question pages in the
columns of its own terms, the pages stay evictable and are shared by every reader process of the index, and a
reader's resident memory no longer holds the whole matrix (at 16M tokens 99 MiB, ``bench/bench_scale.py``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import bm25s
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from s3attn.constants import (
    BM25_CHECKSUMS,
    BM25_DIR,
    BM25_FORMAT_VERSION,
    BM25_META,
    BM25_PASSAGES,
    BM25_STATE,
    BM25_TEXTS,
)
from s3attn.errors import READ_ERRORS, IndexCorruptError, S3Error, index_damaged, one_line
from s3attn.index_builder.schema import crc_hex, in_sorted
from s3attn.storage import Location, shown

STOPWORDS = "en"
STEMMER_NAME = "s-stemmer"


class Passage(NamedTuple):
    doc_id: int
    start: int  # global token position, inclusive
    end: int  # exclusive


class Hit(NamedTuple):
    passage: Passage
    score: float
    terms: list[str]  # question words (lowercased, as written) whose stem occurs in the passage
    coverage: float = 0.0  # IDF-weighted share of the question's terms found in the passage (see search)


def _stem(word: str) -> str:
    """Harman's S-stemmer (plural suffixes only), words of 4+ characters."""
    if len(word) < 4:
        return word
    if word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if word.endswith("s") and not word.endswith(("us", "ss")):
        return word[:-1]
    return word


def stem_words(words: list[str]) -> list[str]:  # bm25s calls the stemmer with the whole vocabulary
    return [_stem(w) for w in words]


def _question_words(question: str) -> list[str]:
    """Lowercased question words without stopwords, duplicates removed (order kept)."""
    words = bm25s.tokenize(question, stopwords=STOPWORDS, return_ids=False, show_progress=False)[0]
    return list(dict.fromkeys(w for w in words if w))


class BM25Index:
    """BM25 over :class:`Passage` windows: :meth:`load` one, :meth:`search` it (built by ``bm25_build``)."""

    def __init__(
        self,
        passages_P3: np.ndarray,
        texts: list[str] | Callable[[], list[str]],
        retriever: bm25s.BM25 | None,
    ) -> None:
        self.passages_P3 = np.asarray(passages_P3, dtype=np.int64).reshape(-1, 3)
        self._texts = texts  # or what reads them: a loaded index reads them on first use (see texts)
        self.retriever = retriever  # None when no passage has an indexable word

    @property
    def texts(self) -> list[str]:
        """The passage texts. An index from :meth:`load` reads them on first use: a question never needs
        them (only a rebuild does). Read at load, a 16M-token reader held 151 MiB of them and kept ~340 MiB of
        the Arrow buffers they came from, against a 99 MiB score matrix (``bench/bench_scale.py``)."""
        if callable(self._texts):
            self._texts = self._texts()
        return self._texts

    def __len__(self) -> int:
        return int(self.passages_P3.shape[0])

    def passage(self, i: int) -> Passage:
        d, s, e = self.passages_P3[i].tolist()
        return Passage(d, s, e)

    # ---- search ---------------------------------------------------------------------------------------
    def search(self, question: str, top_k: int) -> list[Hit]:
        """Best ``top_k`` passages with a positive score, best first (ties: lower passage index).

        A question that is empty, only stopwords, or shares no term with the index returns ``[]``.
        ``Hit.coverage``: the IDF of the question's terms found in the passage over the IDF of all of them
        (a term absent from the index counts with the highest IDF), so 1.0 means every question term is
        there; a paraphrased question scores low even when its best passage scores high.
        """
        if self.retriever is None or top_k <= 0:
            return []
        vocab = self.retriever.vocab_dict
        indptr = self.retriever.scores["indptr"]
        indices = self.retriever.scores["indices"]
        words = _question_words(question)
        stems = list(dict.fromkeys(_stem(w) for w in words))
        by_stem: dict[str, list[str]] = {}
        for w in words:
            stem = _stem(w)
            if stem in vocab:
                by_stem.setdefault(stem, []).append(w)
        if not by_stem:
            return []
        idf = {t: self._idf(int(indptr[vocab[t] + 1] - indptr[vocab[t]]) if t in vocab else 0) for t in stems}
        scores_P = np.asarray(self.retriever.get_scores(list(by_stem)))  # float32, as bm25s scores
        top = top_passages(scores_P, top_k)
        terms: list[list[str]] = [[] for _ in range(top.size)]
        found_H = np.zeros(top.size)
        for stem, words in by_stem.items():  # loop over the few question terms, vectorised over hits
            has = holds(indices[indptr[vocab[stem]] : indptr[vocab[stem] + 1]], top)
            found_H += has * idf[stem]
            for j in np.flatnonzero(has).tolist():
                terms[j].extend(words)
        cover_H = found_H / max(sum(idf.values()), 1e-12)
        return [
            Hit(self.passage(int(i)), float(scores_P[i]), t, round(float(c), 4))
            for i, t, c in zip(top.tolist(), terms, cover_H)
        ]

    def _idf(self, df: int) -> float:
        """BM25's (Lucene's) inverse document frequency of a term in ``df`` of the passages; a term the
        index lacks (df 0) gets the highest."""
        n = len(self)
        return float(np.log1p((n - df + 0.5) / (df + 0.5)))

    # ---- disk -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | Path) -> BM25Index:
        """The index saved in ``folder`` (a ``storage.Location`` is read from its local copy). S3Error when it
        is not one (or of another format); IndexCorruptError naming the file when a file is missing, damaged
        or not the one its checksum (in ``BM25_META``, where recorded) names."""
        folder = Path(folder)
        meta = read_meta(folder)
        for name, crc in sorted(meta.get(BM25_CHECKSUMS, {}).items()):  # absent: written before checksums
            if not (folder / name).is_file():
                raise _damaged(folder, name, "missing")
            with _reading(folder, name):
                found = file_crc32(folder / name)
            if found != crc:
                raise _damaged(folder, name, f"its crc32 is not the one {BM25_META} records")
        for name in (BM25_PASSAGES, BM25_TEXTS):
            if not (folder / name).is_file():
                raise _damaged(folder, name, "missing")
        with _reading(folder, BM25_PASSAGES):
            passages = np.load(folder / BM25_PASSAGES, mmap_mode="r", allow_pickle=False)
        with _reading(folder, BM25_TEXTS):  # the row count only: the texts are read on first use
            rows = pq.ParquetFile(folder / BM25_TEXTS).metadata.num_rows
        n = meta["num_passages"]
        if passages.shape != (n, 3) or passages.dtype != np.int64 or rows != n:
            raise _damaged(
                folder, BM25_PASSAGES, f"passages/texts do not hold the {n} passages {BM25_META} says"
            )
        retriever = None
        if not meta.get("empty"):
            with _reading(folder, "bm25s files (*.index.*)"):
                retriever = bm25s.BM25.load(
                    str(folder), mmap=True, load_vocab=True, show_progress=False, verbosity=0
                )
        return cls(passages, functools.partial(_read_texts, folder), retriever)


def _read_texts(folder: Path) -> list[str]:
    with _reading(folder, BM25_TEXTS):
        return pq.read_table(folder / BM25_TEXTS).column("text").to_pylist()


def top_passages(scores_P: np.ndarray, top_k: int) -> np.ndarray:
    """Indices of the best ``top_k`` positive scores, best first, ties by lower index: what a stable sort of
    every positive score gives, in time linear in the passages. Only the positive scores (the passages that
    hold a question term) are gathered, once; a partition finds the k-th best of them, and only those at or
    above it are sorted."""
    pos = np.flatnonzero(scores_P > 0)
    vals = scores_P[pos]
    if pos.size > top_k > 0:
        kth = np.partition(vals, pos.size - top_k)[pos.size - top_k]
        keep = vals >= kth
        pos, vals = pos[keep], vals[keep]
    return pos[np.argsort(-vals, kind="stable")[: max(top_k, 0)]]


def holds(column: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``np.isin(rows, column)`` for a column of the CSC score matrix: by binary search when its row ids are
    increasing (bm25s writes them so), without sorting a column that may hold most passages."""
    if column.size > 1 and not (column[1:] > column[:-1]).all():
        return np.isin(rows, column)
    return in_sorted(rows, column)


# ---- damage -----------------------------------------------------------------------------------------------
def _damaged(folder: Path, name: str, reason: object) -> IndexCorruptError:
    """The error for damaged file ``name`` of the BM25 folder (inside the index folder)."""
    return index_damaged(shown(folder.parent), f"{folder.name}/{name}", reason)


@contextlib.contextmanager
def _reading(folder: Path, name: str) -> Iterator[None]:
    """Turn what reading a damaged file raises (an Arrow error too) into IndexCorruptError."""
    try:
        yield
    except (*READ_ERRORS, pa.ArrowException) as err:
        raise _damaged(folder, name, err) from err


def file_crc32(path: Path, block: int = 1 << 20) -> str:
    """crc32 (8 hex digits) of a file, read ``block`` bytes at a time: checking the files at load holds no
    copy of the largest (at 16M tokens the score matrix's two arrays are 52 MB each)."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(block):
            crc = zlib.crc32(chunk, crc)
    return crc_hex(crc)


def file_checksums(folder: Path) -> dict[str, str]:
    """crc32 (8 hex digits) of every file in ``folder`` but ``BM25_META``, which records them (the writer
    calls it on the folder it has just written)."""
    return {p.name: file_crc32(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != BM25_META}


def read_meta(folder: Path) -> dict:
    """``BM25_META`` of ``folder``, checked; S3Error when absent or of another format, IndexCorruptError
    when damaged."""
    meta_path = folder / BM25_META
    if not meta_path.is_file():
        raise S3Error(f"{shown(folder)}: not a BM25 index (no {BM25_META}); build the index again")
    with _reading(folder, BM25_META):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if not isinstance(meta, dict):
        raise _damaged(folder, BM25_META, "not a JSON object")
    if meta.get("format_version") != BM25_FORMAT_VERSION:
        raise S3Error(
            f"{shown(meta_path)}: format_version {meta.get('format_version')} is not {BM25_FORMAT_VERSION}; "
            "rebuild the index with this version of s3-attention"
        )
    n, sums = meta.get("num_passages"), meta.get(BM25_CHECKSUMS, {})
    sums_ok = isinstance(sums, dict) and all(isinstance(v, str) for v in sums.values())
    if not isinstance(n, int) or isinstance(n, bool) or n < 0 or not sums_ok:
        raise _damaged(folder, BM25_META, "num_passages or checksums malformed")
    expected = {"stopwords": STOPWORDS, "stemmer": STEMMER_NAME, "method": "lucene"}
    bad = [k for k, v in expected.items() if meta.get(k, v) != v]
    if bad or not isinstance(meta.get("empty", False), bool):
        raise _damaged(folder, BM25_META, f"unknown tokenizer settings {bad or ['empty']}")
    return meta


def verify_bm25(index: Path | Location, num_tokens: int) -> list[str]:
    """Problems of the BM25 index of the index folder ``index`` (covering ``num_tokens`` tokens): damaged,
    missing or stale files, passages outside the index; one line each. No BM25 at all is no problem."""
    folder, state_file = index / BM25_DIR, index / BM25_STATE
    if not folder.exists() and not state_file.exists():
        return []
    try:
        bm25 = BM25Index.load(folder)
    except IndexCorruptError as err:
        return [f"{err.where}: {err.reason}"]
    except S3Error as err:
        return [str(err)]
    p = bm25.passages_P3
    if p.size and (p[:, 1].min() < 0 or p[:, 2].max() > num_tokens or (p[:, 1] >= p[:, 2]).any()):
        return [f"{BM25_DIR}/{BM25_PASSAGES}: passages outside the index's {num_tokens} tokens"]
    if (np.diff(p[:, 1]) < 0).any() or (np.diff(p[:, 0]) < 0).any():
        return [f"{BM25_DIR}/{BM25_PASSAGES}: passages not in document order"]
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        covered, passages = state["tokens"], state["passages"]
    except (*READ_ERRORS, TypeError) as err:
        return [f"{BM25_STATE}: unreadable ({one_line(err)})"]
    if passages != len(bm25):
        return [f"{BM25_STATE}: says {passages} passages, {BM25_DIR} holds {len(bm25)}"]
    if covered != num_tokens:
        return [
            f"{BM25_STATE}: BM25 covers {covered} of the index's {num_tokens} tokens (stale: build again)"
        ]
    return []
