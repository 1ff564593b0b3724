"""Document filters (``retrieve(..., documents=GLOBS)``, ``s3-index ask --documents``) on a tiny 3-document
index, and the pure helpers of retrieval/filters.py."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_WORDS, make_tiny_release, save_tiny_model_dir

from s3attn.config import StackOptions
from s3attn.errors import S3Error
from s3attn.index_builder.config import BuildConfig
from s3attn.index_builder.pipeline import build_index
from s3attn.retrieval.filters import edge_bias, globs_of, head_tail
from s3attn.retrieval.retriever import Retriever

QUESTION = "paris queen river city"


def words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    common = [w for w in TINY_WORDS if w not in ("paris", "queen")]
    return " ".join(rng.choice(common) for _ in range(n))


def build_tiny_index(root: Path, model_dir: Path, docs: dict[str, str]) -> Path:
    """An index of ``docs`` (relative path -> text) with the tiny model in ``model_dir`` (random SAEs)."""
    release = make_tiny_release(root / "release", model_dir, (1, 3))
    corpus = root / "corpus"
    for name, text in docs.items():
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        (corpus / name).write_text(text)
    stack = StackOptions(sae=str(release), model=str(model_dir))
    cfg = BuildConfig(
        out=str(root / "index"), stack=stack, chunk=64, overlap=8, segment_tokens=256, progress=False
    )
    build_index(str(corpus), cfg)
    return root / "index"


@pytest.fixture(scope="module")
def retriever(tmp_path_factory) -> Retriever:
    root = tmp_path_factory.mktemp("filters")
    model_dir = save_tiny_model_dir(root / "model")
    docs = {
        "a.txt": words(200, 1) + " paris queen paris queen paris queen " + words(150, 2),
        "b.txt": words(300, 3),
        "sub/c.txt": words(250, 4),
    }
    return Retriever(build_tiny_index(root, model_dir, docs))


def test_unfiltered_finds_the_planted_words_in_a(retriever):
    assert sorted(p for _, p, _, _ in retriever.doc_table) == ["a.txt", "b.txt", "sub/c.txt"]
    best = max(retriever.retrieve(QUESTION, "bm25", 96), key=lambda s: s.score)
    assert best.document == "a.txt"
    s3 = retriever.retrieve(QUESTION, "s3", 256)
    assert s3 and {s.document for s in s3} != {"b.txt"}


@pytest.mark.parametrize("mode", ["s3", "bm25", "hybrid", "full"])
def test_filter_returns_only_matching_documents(retriever, mode):
    b = next(row for row in retriever.doc_table if row[1] == "b.txt")
    spans = retriever.retrieve(QUESTION, mode, 128, documents="b.txt")
    assert spans, mode
    assert {s.document for s in spans} == {"b.txt"}
    assert all(b[2] <= s.start < s.end <= b[3] for s in spans)
    assert sum(s.end - s.start for s in spans) <= 128


def test_filter_moves_the_s3_scores_into_the_allowed_document(retriever):
    """The filtered S3 spans are the best spans inside b.txt, not b.txt's share of the unfiltered ones."""
    spans = retriever.retrieve(QUESTION, "s3", 64, documents=["b*"])
    scores, _ = retriever.s3_scores(QUESTION)
    b = next(row for row in retriever.doc_table if row[1] == "b.txt")
    expected, smoothed = retriever.s3_candidates(scores, 64, allowed=[(b[2], b[3])])
    inside = smoothed.tokens().positions_N
    assert inside.size and np.all((inside >= b[2]) & (inside < b[3]))
    assert [(s.start, s.end) for s in spans] == [(s.start, s.end) for s in expected]


def test_hybrid_bias_is_of_the_matching_documents(retriever):
    spans = retriever.retrieve(QUESTION, "hybrid", 512, documents=["b.txt", "sub/*"])
    rows = {p: (s, e) for _, p, s, e in retriever.doc_table}
    assert {s.document for s in spans} <= {"b.txt", "sub/c.txt"}
    bias = [s for s in spans if "bias" in s.source]
    assert bias, spans
    first = min(rows["b.txt"][0], rows["sub/c.txt"][0])
    last = max(rows["b.txt"][1], rows["sub/c.txt"][1])
    assert any(s.start == first for s in bias) and any(s.end == last for s in bias)


def test_glob_matching_nothing_is_an_error(retriever):
    with pytest.raises(S3Error, match=r"--documents nothing\*: matches none of the index's 3 document"):
        retriever.retrieve(QUESTION, "hybrid", 64, documents="nothing*")
    with pytest.raises(S3Error, match="non-empty glob"):
        retriever.retrieve(QUESTION, "s3", 64, documents=[""])


def test_ask_cli_documents(retriever, capsys):
    from s3attn.index_builder.cli import main

    index = str(retriever.store.path)
    argv = ["ask", index, QUESTION, "--budget", "96", "--json", "--no-generate", "--documents", "sub/*,b.txt"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["documents"] == ["sub/*", "b.txt"]
    assert out["spans"] and {s["document"] for s in out["spans"]} <= {"b.txt", "sub/c.txt"}
    with pytest.raises(SystemExit) as exc:
        main(["ask", index, QUESTION, "--no-generate", "--documents", "zzz"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--documents zzz" in err and len(err.strip().splitlines()) == 1


def test_head_tail_and_edge_bias():
    ranges = [(0, 5), (20, 30), (40, 42)]
    assert [(s.start, s.end) for s in head_tail(ranges, 17)] == ranges
    cut = head_tail(ranges, 16)
    assert [(s.start, s.end) for s in cut] == [(0, 5), (20, 23), (24, 30), (40, 42)]
    assert all(s.why == {"truncated": "middle"} for s in cut)
    bias = edge_bias([(10, 100), (200, 230)], 64, 64)
    assert [(s.start, s.end, s.why["bias"]) for s in bias] == [(10, 74, "first"), (200, 230, "last")]
    assert [(s.start, s.end) for s in edge_bias([(10, 50)], 64, 64)] == [(10, 50)]  # one short document
    assert globs_of(None) == () and globs_of("a*") == ("a*",) and globs_of(["a", "b"]) == ("a", "b")
