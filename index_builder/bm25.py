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
               BM25_META      format version, passage count, tokenizer settings
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import bm25s
import numpy as np
import pyarrow.parquet as pq

from s3attn.constants import BM25_FORMAT_VERSION, BM25_META, BM25_PASSAGES, BM25_TEXTS
from s3attn.errors import S3Error

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

    def __init__(self, passages_P3: np.ndarray, texts: list[str], retriever: bm25s.BM25 | None) -> None:
        self.passages_P3 = np.asarray(passages_P3, dtype=np.int64).reshape(-1, 3)
        self.texts = texts
        self.retriever = retriever  # None when no passage has an indexable word

    def __len__(self) -> int:
        return int(self.passages_P3.shape[0])

    def passage(self, i: int) -> Passage:
        d, s, e = self.passages_P3[i].tolist()
        return Passage(d, s, e)

    # ---- search ---------------------------------------------------------------------------------------
    def search(self, question: str, top_k: int) -> list[Hit]:
        """Best ``top_k`` passages with a positive score, best first (ties: lower passage index).

        A question that is empty, only stopwords, or shares no term with the index returns ``[]``.
        """
        if self.retriever is None or top_k <= 0:
            return []
        vocab = self.retriever.vocab_dict
        by_stem: dict[str, list[str]] = {}
        for w in _question_words(question):
            stem = _stem(w)
            if stem in vocab:
                by_stem.setdefault(stem, []).append(w)
        if not by_stem:
            return []
        scores_P = np.asarray(self.retriever.get_scores(list(by_stem)), dtype=np.float64)
        pos = np.flatnonzero(scores_P > 0)
        top = pos[np.argsort(-scores_P[pos], kind="stable")[:top_k]]
        indptr = self.retriever.scores["indptr"]
        indices = self.retriever.scores["indices"]
        terms: list[list[str]] = [[] for _ in range(top.size)]
        for stem, words in by_stem.items():  # loop over the few question terms, vectorised over hits
            c = vocab[stem]
            has = np.isin(top, indices[indptr[c] : indptr[c + 1]])
            for j in np.flatnonzero(has).tolist():
                terms[j].extend(words)
        return [Hit(self.passage(int(i)), float(scores_P[i]), t) for i, t in zip(top.tolist(), terms)]

    # ---- disk -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | Path) -> BM25Index:
        folder = Path(folder)
        meta_path = folder / BM25_META
        if not meta_path.is_file():
            raise S3Error(f"{folder}: not a BM25 index (no {BM25_META}); build the index again")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise S3Error(f"{meta_path}: unreadable ({err}); build the index again") from None
        if meta.get("format_version") != BM25_FORMAT_VERSION:
            raise S3Error(
                f"{meta_path}: format_version {meta.get('format_version')} is not {BM25_FORMAT_VERSION}; "
                "rebuild the index with this version of s3-attention"
            )
        for name in (BM25_PASSAGES, BM25_TEXTS):
            if not (folder / name).is_file():
                raise S3Error(f"{folder}: {name} is missing; build the index again")
        passages = np.load(folder / BM25_PASSAGES, allow_pickle=False)
        texts = pq.read_table(folder / BM25_TEXTS).column("text").to_pylist()
        if passages.shape != (meta["num_passages"], 3) or len(texts) != meta["num_passages"]:
            raise S3Error(f"{folder}: passages/texts do not match {BM25_META}; build the index again")
        retriever = None
        if not meta.get("empty"):
            retriever = bm25s.BM25.load(str(folder), load_vocab=True, show_progress=False, verbosity=0)
        return cls(passages, texts, retriever)
