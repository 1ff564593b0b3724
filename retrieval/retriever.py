"""Scores -> spans -> prompt -> answer: ``Retriever(index).retrieve(question, mode, budget)`` and ``.answer``.

Modes: ``s3`` (SAE co-activation spans), ``bm25`` (passages), ``hybrid`` = S3 u BM25 u bias (first and
last tokens), deduplicated, in document order, within the token budget; ``full`` = the whole index text,
middle-truncated to the model's window as LongBench does.

The model answers in the precision the index was built in (``IndexAttrs.dtype``) unless ``dtype`` says
otherwise; then a warning names both (the question's codes may differ a little from the index's). ``reader``
answers with another model (``retrieval/generate.py``); ``documents`` filters by path (``filters.py``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from s3attn.constants import BM25_DIR, QUERY_MAP_FILE, QUERY_MAP_OF_RELEASE
from s3attn.errors import S3Error
from s3attn.index_builder.schema import in_sorted
from s3attn.models.precision import DTYPES
from s3attn.retrieval.config import RetrievalConfig, check_retrieval
from s3attn.retrieval.dtypes import question_dtype
from s3attn.retrieval.expand import Expander
from s3attn.retrieval.filters import Documents, Scope, edge_bias, head_tail, scope_of
from s3attn.retrieval.fusion import hybrid_spans, normalised
from s3attn.retrieval.generate import chat_prompt, generate, load_reader
from s3attn.retrieval.likelihood import likelihood_spans, scorer
from s3attn.retrieval.question import (
    QuestionEncoder,
    head_features,
    question_token_range,
    read_stats,
    score_tokens,
    top_features_near,
)
from s3attn.retrieval.spans import SOURCE_S3, Span, StepScores, bias_spans, fuse, peak_spans, smooth, split_at
from s3attn.retrieval.sparse import SparseScores, from_dense, in_ranges
from s3attn.saes.query_map import QueryMap

MODES = ("s3", "bm25", "hybrid", "full")
DEFAULT_MODE = "hybrid"

logger = logging.getLogger(__name__)


class RetrievedSpan(NamedTuple):
    doc_id: int
    document: str  # source path of the document
    start: int
    end: int
    text: str
    score: float
    source: str
    why: dict


class Answer(NamedTuple):
    text: str
    spans: list[RetrievedSpan]
    prompt_tokens: int  # in the reader's tokens
    seconds: float
    retrieval_seconds: float = 0.0
    generation_seconds: float = 0.0


def decode_many(tokenizer, ids: list[list[int]]) -> list[str]:
    """``[tokenizer.decode(x) for x in ids]``, in one call to a fast tokenizer's backend where that is the
    same thing (no clean-up of tokenization spaces), which skips transformers' per-token input checks."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if getattr(tokenizer, "clean_up_tokenization_spaces", True) is False and hasattr(backend, "decode_batch"):
        return backend.decode_batch(ids, skip_special_tokens=False)
    return [tokenizer.decode(x) for x in ids]


class Retriever:
    """Opens an index with its model and SAEs (checked to match) and answers questions from it.

    ``dtype``: the model precision (``auto``, ``bfloat16``, ``float16``, ``float32``); None or ``index``: the
    one the index was built in. ``stack``: an already loaded ``load_stack`` result to use instead (its model's
    precision is then the one used; ``dtype`` must be None, ``index`` or that one). ``reader``: the model that
    answers (a local HF causal-LM folder, ``smollm2-135m`` or a LoadedModel), loaded in the same precision;
    None: the index's model. Retrieval always uses the index's model."""

    def __init__(
        self,
        index: str | Path,
        *,
        cfg: RetrievalConfig | None = None,
        stack=None,
        dtype: str | torch.dtype | None = None,
        reader=None,
    ):
        from s3attn.index_builder.reader import IndexReader
        from s3attn.saes.checkpoint import read_release_config
        from s3attn.saes.stack import load_stack

        self.cfg = check_retrieval(cfg or RetrievalConfig())
        self.store = IndexReader.open(index)
        meta = self.store.meta
        want = question_dtype(index, meta.dtype, dtype, stack)
        if stack is None:
            release = Path(meta.sae_release_path or "")
            if not release.is_dir():
                raise S3Error(
                    f"{index}: its SAE release {release} is missing; rebuild the index or restore it"
                )
            stack = load_stack(
                release, read_release_config(release), list(meta.layers), meta.model, dtype=DTYPES[want]
            )
        self.loaded, self.saes, self.geom = stack
        self.dtype = want
        if want != meta.dtype:
            logger.warning(
                "%s was built in %s; answering in %s as asked (the question's codes may differ a little "
                "from the index's)",
                index,
                meta.dtype,
                want,
            )
        if self.loaded.model_id != meta.model_id:
            raise S3Error(f"{index}: built with model {meta.model_id}, not {self.loaded.model_id}")
        sae = next(iter(self.saes.values()))
        if sae.cfg.num_latents != meta.num_latents or sae.cfg.k != meta.k:
            raise S3Error(f"{index}: built with another SAE (latents/k differ from the release); rebuild it")
        self.tokenizer = self.loaded.tokenizer
        self.model = self.loaded.model
        self.reader = None if reader is None else load_reader(reader, DTYPES[want])
        self._bm25 = None
        self.last_read: dict[str, int] = {}  # read_stats of the last question's S3 side (lists, postings)
        self._encoders: dict[tuple[str, bool], QuestionEncoder] = {}
        self.expander = Expander(self.model, self.tokenizer)
        self._set_documents()

    # ---- helpers ------------------------------------------------------------------------------------
    def _set_documents(self) -> None:
        """The document table and attention-sink positions of the generation ``store`` reads."""
        self.doc_table = self.store.doc_table()
        starts, ends = self.doc_table.starts, self.doc_table.ends
        sink = starts[:, None] + np.arange(self.cfg.sink_tokens)[None, :]
        self._sink_positions = np.sort(sink[sink < ends[:, None]])

    def refresh(self) -> bool:
        """Move to the newest index generation between questions (Lucene's ``openIfChanged``): the index
        reader (only new segments are opened), the document table, and the BM25 index (loaded again only
        when the writer rebuilt it; passages of documents this generation lacks stay hidden). Returns
        whether the index reader moved."""
        moved = self.store.refresh()
        if moved:
            self._set_documents()
        if self._bm25 is not None:
            self._bm25 = self._bm25.refreshed(self.doc_table.ranges_D3)
        return moved

    @property
    def encoder(self) -> QuestionEncoder:
        """The question encoder for the current ``cfg.question`` (site, half weights, map, heads), made once."""
        q = self.cfg.question
        key = (q.site, q.half_weights, q.query_map, tuple(q.query_heads))
        if key not in self._encoders:
            qmap = QueryMap.load(self._query_map_path(q.query_map)) if q.query_map else None
            self._encoders[key] = QuestionEncoder(
                self.model,
                self.saes,
                self.geom.kv_head_of_query,
                q.site,
                half_weights=q.half_weights,
                query_map=qmap,
                query_heads=q.query_heads,
            )
        return self._encoders[key]

    def _query_map_path(self, option: str) -> Path:
        """``--query-map``: a file, or ``release`` for the map shipped in the index's own SAE release."""
        if option != QUERY_MAP_OF_RELEASE:
            return Path(option)
        path = Path(self.store.meta.sae_release_path or "") / QUERY_MAP_FILE
        if not path.is_file():
            raise S3Error(
                f"--query-map {option}: the index's SAE release has no {path.name} ({path}); give a map file"
            )
        return path

    @property
    def bm25(self):
        """The BM25 index as the generation ``store`` reads sees it (``bm25_view.BM25View``)."""
        if self._bm25 is None:
            from s3attn.retrieval.bm25_view import BM25View

            self._bm25 = BM25View.load(self.store.path / BM25_DIR, self.doc_table.ranges_D3)
        return self._bm25

    def prompt(self, context: str, question: str) -> str:
        """The answering prompt of the index's model (the question's codes are read inside it)."""
        return chat_prompt(self.tokenizer, context, question)

    def _check_question(self, question: str, budget: int) -> None:
        if not question or not question.strip():
            raise S3Error("the question is empty; ask something")
        n = len(self.tokenizer(question, add_special_tokens=False)["input_ids"])
        if n > budget:
            raise S3Error(
                f"the question has {n} tokens, more than --budget {budget}; shorten it or raise --budget"
            )

    # ---- retrieval ----------------------------------------------------------------------------------
    def s3_scores(self, question: str) -> tuple[SparseScores, dict]:
        """The question's S3 scores (of the tokens its postings touch) and the features read per (layer,
        KV head). What is coded is the question, or with ``cfg.question.expand`` the passage the model writes
        for it (``expand.Expander``)."""
        text = self.expander.coded_text(question, self.cfg.question)
        prompt = self.prompt("", text)
        ids = torch.tensor(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        codes = self.encoder.codes(ids, question_token_range(self.tokenizer, prompt, text))
        head_feats = head_features(codes, self.store, self.cfg.question)
        self.last_read = read_stats(head_feats)
        return score_tokens(self.store, head_feats, self.cfg.question), head_feats

    def s3_candidates(
        self,
        scores: SparseScores | np.ndarray,
        budget: int,
        *,
        allowed: list[tuple[int, int]] | None = None,
    ) -> tuple[list[Span], StepScores]:
        """S3 scores (``SparseScores``, or one per token) -> (S3 spans within ``budget``, the smoothed scores
        they were read from, as runs). The sink tokens, and those outside ``allowed`` (sorted, disjoint
        ``(start, end)`` ranges) when given, get no score. Works on the touched tokens only."""
        cfg = self.cfg
        if not isinstance(scores, SparseScores):
            scores = from_dense(scores)
        scores = scores.keep(~in_sorted(scores.positions_N, self._sink_positions))
        if allowed is not None:
            scores = scores.keep(in_ranges(scores.positions_N, allowed))
        sm = smooth(scores, cfg.window)
        if allowed is not None:  # smoothing spreads scores over the edges of the allowed documents
            sm = sm.restrict(allowed)
        peaks = peak_spans(
            sm,
            budget=budget,
            min_distance=cfg.min_distance,
            frac=cfg.frac,
            max_len=cfg.max_span,
            min_len=cfg.min_span,
            boundaries=self.doc_table.starts,
        )
        return [s for s in fuse([peaks], budget) if SOURCE_S3 in s.source], sm

    def s3_spans(self, scores: SparseScores | np.ndarray, budget: int) -> list[Span]:
        """S3 scores -> S3 spans within ``budget`` (see :meth:`s3_candidates`)."""
        return self.s3_candidates(scores, budget)[0]

    def retrieve(
        self,
        question: str,
        mode: str = DEFAULT_MODE,
        budget: int | None = None,
        *,
        explain: bool = False,
        documents: Documents = None,
    ) -> list[RetrievedSpan]:
        """The spans of ``mode`` for ``question`` within ``budget`` tokens (default: ``cfg.budget``), from the
        documents whose path matches ``documents`` (a glob or a list of globs; None: all; see filters.py)."""
        budget = self.cfg.budget if budget is None else budget
        if mode not in MODES:
            raise S3Error(f"--mode {mode}: choose one of {', '.join(MODES)}")
        self._check_question(question, budget)
        scope = scope_of(documents, self.doc_table)
        if mode == "full":
            return self._materialise(
                self._full_spans(budget) if scope is None else head_tail(scope.ranges, budget)
            )
        hits = self._bm25_hits(question, scope) if mode in ("bm25", "hybrid") else []
        if mode == "bm25":
            return self._materialise(normalised(fuse([hits], budget)) if hits else [])
        scores, head_feats = self.s3_scores(question)
        lik = mode == "hybrid" and self.cfg.hybrid.fusion == "likelihood"
        pool = int(budget * self.cfg.hybrid.likelihood_pool) if lik else budget
        s3, sm = self.s3_candidates(scores, pool, allowed=None if scope is None else scope.ranges)
        if explain:
            s3 = [
                s._replace(
                    why={
                        **s.why,
                        "features": top_features_near(head_feats, self.store, s.start, s.end),
                        **self._expansion_why(question),
                    }
                )
                for s in s3
            ]
        if mode == "s3":
            spans = normalised(s3)
        elif lik:
            score = scorer(self.model, self.tokenizer, self.store.tokens, question)
            spans = likelihood_spans(self._bias(scope), hits, s3, budget, score)
        else:
            spans = hybrid_spans(self._bias(scope), hits, s3, sm, budget, self.cfg.hybrid)
        return self._materialise(spans)

    def _expansion_why(self, question: str) -> dict[str, str]:
        """For ``--show-spans``: the passage coded in place of (or after) the question, when ``expand`` is on."""
        q = self.cfg.question
        return {} if q.expand == "none" else {f"expand_{q.expand}": self.expander.hypothesis(question, q)}

    def _bm25_hits(self, question: str, scope: Scope | None, top_k: int = 64) -> list[Span]:
        """BM25's best ``top_k`` passages (of the documents in ``scope``, when given) as spans."""
        from s3attn.retrieval.spans import bm25_spans

        if scope is None:
            return bm25_spans(self.bm25.search(question, top_k=top_k))
        hits = self.bm25.search(question, top_k=len(self.bm25))
        return bm25_spans([h for h in hits if h.passage.doc_id in scope.doc_ids][:top_k])

    def _bias(self, scope: Scope | None) -> list[Span]:
        """Hybrid's first/last-token spans: of the whole index, or of the documents in ``scope``."""
        cfg = self.cfg
        if scope is None:
            return bias_spans([(0, self.store.num_tokens)], cfg.bias_first, cfg.bias_last)
        return edge_bias(scope.ranges, cfg.bias_first, cfg.bias_last)

    def _full_spans(self, budget: int) -> list[Span]:
        n = self.store.num_tokens
        if n <= budget:
            return [Span(0, n, 1.0, "full", {})]
        half = budget // 2
        return [
            Span(0, half, 1.0, "full", {"truncated": "middle"}),
            Span(n - (budget - half), n, 1.0, "full", {"truncated": "middle"}),
        ]

    def _materialise(self, spans: list[Span]) -> list[RetrievedSpan]:
        """Spans, cut at document starts -> their documents and text (all decoded in one call)."""
        spans = split_at(spans, self.doc_table.starts)
        texts = decode_many(self.tokenizer, [self.store.tokens(s.start, s.end).tolist() for s in spans])
        out = []
        for span, text in zip(spans, texts):
            i = self.doc_table.containing(span.start)
            doc = self.doc_table[i] if i >= 0 else (-1, "?", 0, 0)
            out.append(
                RetrievedSpan(
                    doc[0], doc[1], span.start, span.end, text, float(span.score), span.source, span.why
                )
            )
        return out

    # ---- generation ---------------------------------------------------------------------------------
    def answer(
        self,
        question: str,
        mode: str = DEFAULT_MODE,
        budget: int | None = None,
        *,
        max_new_tokens: int | None = None,
        explain: bool = False,
        documents: Documents = None,
    ) -> Answer:
        """Retrieve (with the index's model), then answer with the reader (default: the index's model), in
        the reader's own prompt format. ``Answer.prompt_tokens`` counts the reader's tokens."""
        t0 = time.perf_counter()
        spans = self.retrieve(question, mode, budget, explain=explain, documents=documents)
        t1 = time.perf_counter()
        context = "\n...\n".join(s.text.strip() for s in spans)
        reader = self.reader or self.loaded
        text, n_prompt = generate(
            reader.model,
            reader.tokenizer,
            chat_prompt(reader.tokenizer, context, question),
            max_new_tokens or self.cfg.max_new_tokens,
        )
        t2 = time.perf_counter()
        return Answer(text, spans, n_prompt, t2 - t0, t1 - t0, t2 - t1)
