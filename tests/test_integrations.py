"""RAG framework adapters on a tiny index: LangChain Documents and LlamaIndex nodes carry the Retriever's
spans (same documents, token ranges, scores, sources, order); neither framework is imported by s3attn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import build_tiny_index, filler_words

from s3attn.errors import S3Error
from s3attn.retrieval.retriever import Retriever

QUESTION = "where is the queen of paris"


words = filler_words


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("integr")
    docs = {"a.txt": words(200, 1) + " paris queen paris queen " + words(150, 2), "b.txt": words(250, 3)}
    return build_tiny_index(root, docs)[0]


@pytest.fixture(scope="module")
def retriever(tiny_index) -> Retriever:
    return Retriever(tiny_index)


def expected(retriever: Retriever, mode: str, budget: int) -> list[tuple]:
    spans = retriever.retrieve(QUESTION, mode, budget, explain=True)
    assert spans, mode
    return [(s.document, s.doc_id, s.start, s.end, s.score, s.source, s.text) for s in spans]


def as_rows(items: list[tuple[dict, str]]) -> list[tuple]:
    return [
        (m["document"], m["doc_id"], m["start"], m["end"], m["score"], m["source"], text) for m, text in items
    ]


@pytest.mark.parametrize("mode", ["hybrid", "bm25"])
def test_langchain_documents_are_the_spans(retriever, mode):
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from s3attn.integrations.langchain import S3Retriever

    docs = S3Retriever(retriever=retriever, mode=mode, budget=96).invoke(QUESTION)
    assert all(isinstance(d, Document) for d in docs)
    assert as_rows([(d.metadata, d.page_content) for d in docs]) == expected(retriever, mode, 96)
    assert all(isinstance(d.metadata["why"], dict) for d in docs)
    assert {Path(d.metadata["document"]).name for d in docs} <= {"a.txt", "b.txt"}


def test_langchain_opens_an_index_path(tiny_index, retriever):
    pytest.importorskip("langchain_core")
    from s3attn.integrations.langchain import S3Retriever

    lc = S3Retriever(index=str(tiny_index), mode="s3", budget=64)
    docs = lc.invoke(QUESTION)
    assert isinstance(lc.s3_retriever(), Retriever) and lc.s3_retriever() is not retriever
    assert as_rows([(d.metadata, d.page_content) for d in docs]) == expected(retriever, "s3", 64)


def test_llama_index_nodes_are_the_spans(retriever):
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import NodeWithScore, TextNode

    from s3attn.integrations.llama_index import S3Retriever

    nodes = S3Retriever(retriever=retriever, mode="hybrid", budget=96).retrieve(QUESTION)
    assert all(isinstance(n, NodeWithScore) and isinstance(n.node, TextNode) for n in nodes)
    want = expected(retriever, "hybrid", 96)
    assert as_rows([(n.node.metadata, n.node.get_content()) for n in nodes]) == want
    assert [n.score for n in nodes] == [row[4] for row in want]
    assert len({n.node.node_id for n in nodes}) == len(nodes)
    shown = nodes[0].node.get_content(metadata_mode="llm")
    assert "document:" in shown and "why:" not in shown


@pytest.mark.parametrize("framework", ["langchain", "llama_index"])
def test_documents_filter_reaches_the_retriever(retriever, framework):
    pytest.importorskip("langchain_core" if framework == "langchain" else "llama_index.core")
    import inspect

    if "documents" not in inspect.signature(Retriever.retrieve).parameters:
        pytest.skip("this Retriever has no per-call documents filter")
    want = retriever.retrieve(QUESTION, "hybrid", 96, explain=True, documents="*b.txt")
    assert want and {Path(s.document).name for s in want} == {"b.txt"}
    if framework == "langchain":
        from s3attn.integrations.langchain import S3Retriever

        got = [
            d.metadata
            for d in S3Retriever(retriever=retriever, budget=96, documents="*b.txt").invoke(QUESTION)
        ]
    else:
        from s3attn.integrations.llama_index import S3Retriever

        nodes = S3Retriever(retriever=retriever, budget=96, documents=["*b.txt"]).retrieve(QUESTION)
        got = [n.node.metadata for n in nodes]
    assert [(m["document"], m["start"], m["end"]) for m in got] == [
        (s.document, s.start, s.end) for s in want
    ]


class NoFilter:
    """A Retriever stand-in whose ``retrieve`` takes no ``documents``."""

    def retrieve(self, question, mode, budget, *, explain=False):
        raise AssertionError("must not be called")


def test_bad_setups_are_errors():
    """A filter the Retriever cannot apply, or neither index nor retriever: errors, never silent."""
    pytest.importorskip("langchain_core")
    from s3attn.integrations.langchain import S3Retriever

    with pytest.raises(S3Error, match="documents="):
        S3Retriever(retriever=NoFilter(), documents=["a.txt"]).invoke(QUESTION)
    with pytest.raises(S3Error, match="index= .* or retriever="):
        S3Retriever().invoke(QUESTION)


def test_s3attn_imports_no_framework():
    code = (
        "import sys, s3attn.retrieval.retriever, s3attn.integrations\n"
        "print(','.join(m for m in ('langchain_core', 'llama_index') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
