"""LlamaIndex adapter (extra ``llamaindex``): ``S3Retriever``, a ``llama_index.core`` retriever over an
s3attn index whose ``retrieve(question)`` returns one ``NodeWithScore`` per retrieved span, in the
Retriever's order.

Each node is a ``TextNode`` with the span's text and ``metadata`` ``document`` (source path), ``doc_id``,
``start`` and ``end`` (token range in the index), ``score``, ``source`` (s3, bm25, bias, ...) and ``why``;
only ``document`` is shown to LLMs and embedders. The node's score is the span's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from s3attn.integrations import Documents, open_retriever, require, retrieve_spans, span_metadata

require("llama_index.core", "llamaindex")

from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402

__all__ = ["S3Retriever"]

HIDDEN_KEYS = ["doc_id", "start", "end", "score", "source", "why"]  # kept out of LLM and embedding text


class S3Retriever(BaseRetriever):
    """Spans of an s3attn index as LlamaIndex nodes.

    Give ``index`` (an index folder, opened on first use with ``dtype``) or ``retriever`` (an open s3attn
    ``Retriever``). ``mode``: s3, bm25, hybrid or full; ``budget``: context tokens (None: the Retriever's
    configured budget); ``documents``: a glob or list of globs on document paths (see retrieval/filters.py).
    Other keyword arguments go to LlamaIndex's ``BaseRetriever`` (``callback_manager``, ``verbose``)."""

    def __init__(
        self,
        index: str | Path | None = None,
        *,
        retriever: Any = None,
        mode: str = "hybrid",
        budget: int | None = None,
        documents: Documents = None,
        dtype: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.index = index
        self.mode = mode
        self.budget = budget
        self.documents = documents
        self.dtype = dtype
        self._given = retriever
        self._s3: Any = None

    def s3_retriever(self):
        """The s3attn Retriever answering the questions (opened on first use)."""
        if self._s3 is None:
            self._s3 = open_retriever(self.index, self._given, self.documents, self.dtype)
        return self._s3

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        question = query_bundle.query_str  # LlamaIndex's name; it is the user's question
        spans = retrieve_spans(self.s3_retriever(), question, self.mode, self.budget, self.documents)
        return [
            NodeWithScore(
                node=TextNode(
                    id_=f"s3:{s.doc_id}:{s.start}:{s.end}",
                    text=s.text,
                    metadata=span_metadata(s),
                    excluded_llm_metadata_keys=list(HIDDEN_KEYS),
                    excluded_embed_metadata_keys=list(HIDDEN_KEYS),
                ),
                score=float(s.score),
            )
            for s in spans
        ]
