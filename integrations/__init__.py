"""RAG framework adapters, optional extras: ``s3attn.integrations.langchain.S3Retriever`` (extra
``langchain``) and ``s3attn.integrations.llama_index.S3Retriever`` (extra ``llamaindex``).

Nothing else in s3attn imports this package; importing it loads neither framework (each adapter module
imports its own framework, and says which extra to install when it is missing).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from s3attn.errors import S3Error

__all__ = ["Documents", "open_retriever", "retrieve_spans", "span_metadata", "require"]


def require(module: str, extra: str):
    """``import module``, or an S3Error naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise S3Error(f"{module} is missing: pip install 's3-attention[{extra}]'") from exc


def _accepts(func, name: str) -> bool:
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


Documents = str | list[str] | None  # a glob or a list of globs on the document paths (None: all)


def _as_filter(documents: Documents) -> Documents:
    return documents if documents is None or isinstance(documents, str) else list(documents)


def open_retriever(
    index: str | Path | None, retriever: Any = None, documents: Documents = None, dtype: str | None = None
):
    """The s3attn ``Retriever`` to use: ``retriever`` as given, else one opened on ``index`` (with the
    ``documents`` filter when only its constructor takes one)."""
    from s3attn.retrieval.retriever import Retriever

    if retriever is not None:
        if documents is not None and not _accepts(retriever.retrieve, "documents"):
            raise S3Error("S3Retriever documents=: give the filter to the Retriever you pass (documents=)")
        return retriever
    if index is None:
        raise S3Error("S3Retriever: give index= (an index folder) or retriever= (an s3attn Retriever)")
    kwargs: dict[str, Any] = {"dtype": dtype}
    if documents is not None and not _accepts(Retriever.retrieve, "documents"):
        if not _accepts(Retriever.__init__, "documents"):
            raise S3Error("S3Retriever documents=: this s3attn's Retriever has no documents filter; drop it")
        kwargs["documents"] = _as_filter(documents)
    return Retriever(index, **kwargs)


def retrieve_spans(
    retriever: Any, question: str, mode: str, budget: int | None, documents: Documents = None
) -> list:
    """``retriever.retrieve(question, mode, budget, explain=True)``, passing ``documents`` where
    ``retrieve`` takes it (else it was given to the Retriever's constructor, see :func:`open_retriever`)."""
    kwargs: dict[str, Any] = {"explain": True}
    if documents is not None and _accepts(retriever.retrieve, "documents"):
        kwargs["documents"] = _as_filter(documents)
    return retriever.retrieve(question, mode, budget, **kwargs)


def span_metadata(span: Any) -> dict[str, Any]:
    """A retrieved span's metadata: document path, doc id, token range, score, source and why."""
    return {
        "document": span.document,
        "doc_id": int(span.doc_id),
        "start": int(span.start),
        "end": int(span.end),
        "score": float(span.score),
        "source": span.source,
        "why": dict(span.why),
    }
