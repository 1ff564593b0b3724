"""LangChain adapter (extra ``langchain``): ``S3Retriever``, a ``langchain_core`` retriever over an s3attn
index whose ``invoke(question)`` returns one ``Document`` per retrieved span, in the Retriever's order.

``page_content`` is the span's text; ``metadata`` holds ``document`` (source path), ``doc_id``, ``start`` and
``end`` (token range in the index), ``score``, ``source`` (s3, bm25, bias, ...) and ``why``.
"""

from __future__ import annotations

from typing import Any

from s3attn.integrations import Documents, open_retriever, require, retrieve_spans, span_metadata

require("langchain_core", "langchain")

from langchain_core.callbacks import CallbackManagerForRetrieverRun  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from pydantic import ConfigDict, PrivateAttr  # noqa: E402

__all__ = ["S3Retriever"]


class S3Retriever(BaseRetriever):
    """Spans of an s3attn index as LangChain Documents.

    Give ``index`` (an index folder, opened on first use with ``dtype``) or ``retriever`` (an open s3attn
    ``Retriever``). ``mode``: s3, bm25, hybrid or full; ``budget``: context tokens (None: the Retriever's
    configured budget); ``documents``: a glob or list of globs on document paths (see retrieval/filters.py)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: str | None = None
    retriever: Any = None
    mode: str = "hybrid"
    budget: int | None = None
    documents: Documents = None
    dtype: str | None = None
    _s3: Any = PrivateAttr(default=None)

    def s3_retriever(self):
        """The s3attn Retriever answering the questions (opened on first use)."""
        if self._s3 is None:
            index = None if self.index is None else str(self.index)
            self._s3 = open_retriever(index, self.retriever, self.documents, self.dtype)
        return self._s3

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        question = query  # LangChain's name; it is the user's question
        spans = retrieve_spans(self.s3_retriever(), question, self.mode, self.budget, self.documents)
        return [Document(page_content=s.text, metadata=span_metadata(s)) for s in spans]
