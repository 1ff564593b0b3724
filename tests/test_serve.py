"""``s3-index serve``: a real server process on a free loopback port, asked over HTTP (httpx), on a tiny index;
and the error handling of ``make_app`` in-process with a stub retriever."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from conftest import make_tiny_release, save_tiny_model_dir  # noqa: E402

from s3attn.config import StackOptions  # noqa: E402
from s3attn.errors import IndexCorruptError, S3Error  # noqa: E402
from s3attn.index_builder.config import BuildConfig  # noqa: E402
from s3attn.index_builder.pipeline import build_index  # noqa: E402
from s3attn.index_builder.reader import IndexReader  # noqa: E402

LAYERS = (1, 3)
ASK_FIELDS = {"question", "mode", "budget", "answer", "prompt_tokens", "seconds", "spans"}
FILLER = "the river city of north and south was old and new by the water mountain book story "


def _build(corpus: Path, index: Path, model_dir: Path, release: Path) -> None:
    stack = StackOptions(sae=str(release), model=str(model_dir))
    cfg = BuildConfig(out=str(index), stack=stack, chunk=64, overlap=8, segment_tokens=256, progress=False)
    build_index(str(corpus), cfg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    model_dir = save_tiny_model_dir(root / "model")
    release = make_tiny_release(root / "release", model_dir, LAYERS, latents=64, k=4)
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(FILLER * 20 + " paris queen paris queen " + FILLER * 10)
    (corpus / "b.txt").write_text(FILLER * 25)
    index = root / "index"
    _build(corpus, index, model_dir, release)
    port = _free_port()
    log = (root / "server.log").open("w")
    cmd = [sys.executable, "-m", "s3attn.index_builder.cli", "serve", str(index), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (root / "server.log").read_text()
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up in 60 s"
            time.sleep(0.2)
        yield {
            "client": client,
            "index": index,
            "corpus": corpus,
            "root": root,
            "build": (model_dir, release),
        }
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    assert "Traceback" not in (root / "server.log").read_text()


def _one_line_error(r, status: int | tuple) -> str:
    assert r.status_code in (status if isinstance(status, tuple) else (status,)), r.text
    body = r.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


def test_health_and_info(server):
    client = server["client"]
    assert client.get("/health").json() == {"status": "ok", "index": str(server["index"])}
    info = client.get("/info").json()
    with IndexReader.open(server["index"]) as store:
        want = json.loads(json.dumps(store.info()))
    assert info["documents"] == 2 and info["dtype"]
    assert {k: info[k] for k in want if k != "documents"} == {
        k: v for k, v in want.items() if k != "documents"
    }


def test_retrieve_finds_the_planted_words_within_budget(server):
    r = server["client"].post("/retrieve", json={"question": "paris queen", "mode": "bm25", "budget": 64})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["mode"] == "bm25" and out["budget"] == 64 and out["question"] == "paris queen"
    assert out["spans"] and sum(s["end"] - s["start"] for s in out["spans"]) <= 64
    assert out["spans"][0]["document"].endswith("a.txt") and "paris queen" in out["spans"][0]["text"]


def test_answer_has_the_ask_json_fields(server):
    q = {"question": "paris queen", "mode": "hybrid", "budget": 96, "max_new_tokens": 4}
    out = server["client"].post("/answer", json=q).json()
    assert set(out) == ASK_FIELDS
    assert isinstance(out["answer"], str) and out["prompt_tokens"] > 0 and out["budget"] == 96
    assert 0 < sum(s["end"] - s["start"] for s in out["spans"]) <= 96


def test_bad_requests_get_one_line_errors(server):
    client = server["client"]
    assert "empty" in _one_line_error(client.post("/retrieve", json={"question": "  "}), 400)
    assert "--mode" in _one_line_error(client.post("/retrieve", json={"question": "x", "mode": "magic"}), 400)
    assert "budget" in _one_line_error(client.post("/retrieve", json={"question": "x", "budget": 0}), 422)
    assert "question" in _one_line_error(client.post("/answer", json={"mode": "s3"}), 422)
    assert "body.top" in _one_line_error(client.post("/retrieve", json={"question": "x", "top": 3}), 422)
    bad_json = client.post("/retrieve", content=b"{not json", headers={"content-type": "application/json"})
    _one_line_error(bad_json, 422)
    _one_line_error(client.get("/nowhere"), 404)
    _one_line_error(client.get("/retrieve"), 405)


def test_concurrent_burst_is_served_in_full_and_unmixed(server):
    client = server["client"]
    questions = [
        {"question": q, "mode": m, "budget": 64}
        for q in ("paris queen", "river city")
        for m in ("s3", "hybrid")
    ]
    alone = [client.post("/retrieve", json=q).json()["spans"] for q in questions]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda i: client.post("/retrieve", json=questions[i % 4]), range(12)))
    assert [r.status_code for r in replies] == [200] * 12
    for i, r in enumerate(replies):  # requests never interleave on the model: the same spans as alone
        assert r.json()["spans"] == alone[i % 4]


def test_documents_restrict_the_spans(server):
    from s3attn.retrieval.retriever import Retriever
    from s3attn.retrieval.serve import takes

    if not takes(Retriever.retrieve, "documents"):
        pytest.skip("this Retriever takes no documents=")
    q = {"question": "river city", "mode": "bm25", "budget": 64, "documents": ["*b.txt"]}
    out = server["client"].post("/retrieve", json=q).json()
    assert out["spans"] and all(s["document"].endswith("b.txt") for s in out["spans"])


def test_documents_appended_by_a_build_are_found_without_restart(server):
    client = server["client"]
    (server["corpus"] / "c.txt").write_text(FILLER * 5 + " queen queen queen queen queen " + FILLER * 5)
    _build(server["corpus"], server["index"], *server["build"])
    assert client.get("/info").json()["documents"] == 3
    out = client.post("/retrieve", json={"question": "queen", "mode": "bm25", "budget": 64}).json()
    assert any(s["document"].endswith("c.txt") for s in out["spans"])


class _Stub:
    """A retriever whose retrieve raises what it is given."""

    def __init__(self, exc: Exception):
        self.exc, self.refreshed = exc, 0

    def refresh(self) -> bool:
        self.refreshed += 1
        return False

    def retrieve(self, question, mode, budget, *, explain=False):
        raise self.exc


@pytest.mark.parametrize(
    "exc, status",
    [
        (S3Error("--budget 3: too small"), 400),
        (IndexCorruptError("idx: segment seg-1 is damaged (crc); run s3-index verify idx"), 503),
        (RuntimeError("boom\nsecond line"), 500),
    ],
)
def test_errors_map_to_one_line_json(exc, status):
    from fastapi.testclient import TestClient

    from s3attn.retrieval.serve import make_app

    stub = _Stub(exc)
    with TestClient(make_app(stub), raise_server_exceptions=False) as client:
        error = _one_line_error(client.post("/retrieve", json={"question": "q"}), status)
    assert stub.refreshed == 1 and ("boom second line" in error if status == 500 else error == str(exc))
    documents = make_app(stub)
    with TestClient(documents, raise_server_exceptions=False) as client:
        r = client.post("/retrieve", json={"question": "q", "documents": ["a.txt"]})
    assert "documents" in _one_line_error(r, 400)  # the stub's retrieve takes no documents
