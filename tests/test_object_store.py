"""Indexes on object storage: a real S3-compatible server (moto, server mode) on a loopback port.

The same tiny corpus is built to a local folder and to ``s3://bucket/idx``; ``info`` and ``verify`` work on
the URL, the reader API reads the same documents, tokens and postings, and retrieval (s3 and bm25 modes)
returns the same spans. Two ranks building into another URL (staging on the store, absorbed there) give every
document the same tokens and postings. A build killed (SIGKILL) between writing a segment and the manifest that lists it
shows only committed segments and resumes to the same index; a damaged object is a one-line error; garbage
collection keeps replaced segments for the grace period. Dummy credentials; no network beyond loopback.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_documents, filler_words, make_tiny_release, save_tiny_model_dir

from s3attn.config import StackOptions
from s3attn.index_builder.cli import main
from s3attn.index_builder.config import BuildConfig
from s3attn.index_builder.indexer import KILL_COMMIT, IndexWriter
from s3attn.index_builder.pipeline import build_index
from s3attn.index_builder.reader import IndexReader, doc_ranges
from s3attn.index_builder.schema import DocRecord, SegmentData
from s3attn.storage import Location

pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

BUCKET = "bucket"
URL = f"s3://{BUCKET}/idx"
QUESTION = "where is the queen of paris"
ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_SESSION_TOKEN": "",
}


@pytest.fixture(scope="module")
def server():
    """A moto S3 server on a free loopback port, the environment pointing at it, and an empty bucket."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    saved = {k: os.environ.get(k) for k in [*ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(ENV)
    os.environ.pop("AWS_SESSION_TOKEN")
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield os.environ["AWS_ENDPOINT_URL"]
    srv.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def world(server, tmp_path_factory) -> dict:
    """A tiny model, release and corpus, built once to local disk and once to s3://bucket/idx."""
    root = tmp_path_factory.mktemp("objstore")
    model_dir = save_tiny_model_dir(root / "model")
    release = make_tiny_release(root / "release", model_dir)
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(5):
        extra = " the queen of paris " if i == 3 else " "
        (corpus / f"d{i}.txt").write_text(filler_words(120, i) + extra + filler_words(60, 10 + i) + "\n")
    stack = StackOptions(sae=str(release), model=str(model_dir))
    local = root / "local"
    for out in (str(local), URL):
        cfg = BuildConfig(out=out, stack=stack, chunk=64, overlap=8, segment_tokens=256, progress=False)
        build_index(str(corpus), cfg)
    return {"root": root, "model": model_dir, "release": release, "corpus": corpus, "local": local}


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return int(code or 0), out.getvalue(), err.getvalue()


def content(index: str | Path):
    """Documents (as document ranges), every token, every posting of every feature, per head."""
    with IndexReader.open(index) as st:
        docs = [(d.doc_id, d.path, d.content_hash) for d in st.documents()]
        ranges = doc_ranges(st)
        toks = st.tokens(0, st.num_tokens)
        feats = np.arange(st.meta.num_latents)
        heads = {key: st.postings(*key, feats) for key in st.heads}
    return sorted(set(docs)), ranges, toks, heads


def assert_same_index(a: str | Path, b: str | Path, *, exact_acts: bool = True) -> None:
    docs_a, ranges_a, toks_a, heads_a = content(a)
    docs_b, ranges_b, toks_b, heads_b = content(b)
    assert docs_a == docs_b and ranges_a == ranges_b
    np.testing.assert_array_equal(toks_a, toks_b)
    assert heads_a.keys() == heads_b.keys()
    for key, pa in heads_a.items():
        pb = heads_b[key]
        np.testing.assert_array_equal(pa.positions, pb.positions, err_msg=str(key))
        np.testing.assert_array_equal(pa.feature_slot, pb.feature_slot, err_msg=str(key))
        if exact_acts:
            np.testing.assert_array_equal(pa.acts, pb.acts, err_msg=str(key))
        else:  # a merge re-quantizes on the larger scale: within half a log step
            tol = np.log1p(2 * max(pa.acts.max(), pb.acts.max())) / 510 + 1e-6
            assert np.abs(np.log1p(pa.acts) - np.log1p(pb.acts)).max() <= tol, key


def test_info_and_verify_on_the_url(world) -> None:
    code, out, err = run_cli(["info", "--json", URL])
    assert code == 0, err
    remote = json.loads(out)
    code, out, _ = run_cli(["info", "--json", str(world["local"])])
    local = json.loads(out)
    for key in ("documents", "tokens", "postings", "segments", "dtype"):
        assert remote[key] == local[key], key
    for kind in ("tokens", "offsets", "pos_gaps", "act_u8", "documents"):  # the same chunk bytes
        assert remote["bytes_by_array"][kind] == local["bytes_by_array"][kind], kind
    code, out, err = run_cli(["verify", URL])
    assert code == 0 and out.startswith(f"{URL}: ok"), err


def test_absorb_rewrites_the_documents_arrays_on_the_url(world) -> None:
    """A staging index's segments moved into another on object storage: their documents arrays (format 4)
    are rewritten in place there, rebased to the new token and document ids."""
    with IndexReader.open(URL) as st:
        attrs = st.meta
    rng = np.random.default_rng(0)

    def segment(start: int, doc_id: int, name: str) -> SegmentData:
        n, k = 12, attrs.k
        codes = {
            h: (rng.permuted(np.tile(np.arange(attrs.num_latents), (n, 1)), axis=1)[:, :k], np.ones((n, k)))
            for h in attrs.heads
        }
        return SegmentData(
            np.arange(n, dtype=np.uint32), [DocRecord(doc_id, name, "h", start, n)], start, codes
        )

    with (
        IndexWriter.create(f"{URL}-absorb", attrs) as into,
        IndexWriter.create(f"{URL}-stage", attrs) as stage,
    ):
        into.add_segment(segment(0, 0, "a.txt"))
        stage.add_segment(segment(0, 0, "b.txt"))
        assert into.absorb(stage) == 1 and into.verify() == []
        assert into.documents() == [DocRecord(0, "a.txt", "h", 0, 12), DocRecord(1, "b.txt", "h", 12, 12)]
    with IndexReader.open(f"{URL}-absorb") as st:
        assert list(st.doc_table()) == [(0, "a.txt", 0, 12), (1, "b.txt", 12, 24)] and st.verify() == []


def test_reader_reads_the_same_index(world) -> None:
    assert_same_index(URL, world["local"])
    with IndexReader.open(URL) as st:
        assert st.leased_generation is None  # no leases on object storage (grace period instead)
        assert isinstance(st.path, Location) and str(st.path) == URL


def test_retrieval_spans_equal_local(world) -> None:
    from s3attn.retrieval.retriever import Retriever

    local = Retriever(world["local"])
    remote = Retriever(URL, stack=(local.loaded, local.saes, local.geom))
    for mode in ("s3", "bm25"):
        want = local.retrieve(QUESTION, mode, 96)
        got = remote.retrieve(QUESTION, mode, 96)
        assert want, mode
        assert [(s.doc_id, s.document, s.start, s.end, s.text, s.source) for s in got] == [
            (s.doc_id, s.document, s.start, s.end, s.text, s.source) for s in want
        ], mode
        np.testing.assert_allclose([s.score for s in got], [s.score for s in want], rtol=1e-6)
    assert not remote.refresh()  # nothing changed; the local copy of bm25/ is still current
    remote.store.close()
    local.store.close()


def _build_argv(world, out: str, *extra: str) -> list[str]:
    return [
        "build",
        str(world["corpus"]),
        "--out",
        out,
        "--sae",
        str(world["release"]),
        "--model",
        str(world["model"]),
        "--chunk",
        "64",
        "--overlap",
        "8",
        "--segment-tokens",
        "256",
        "--no-progress",
        *extra,
    ]


def test_killed_build_resumes_to_the_same_index(world) -> None:
    out = f"s3://{BUCKET}/killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "S3ATTN_TEST_KILL_AT": f"{KILL_COMMIT}:2"}
    proc = subprocess.run(
        [sys.executable, "-m", "s3attn.index_builder.cli", *_build_argv(world, out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    loc = Location(out)
    with IndexReader.open(out) as st:  # the second segment is written but not listed: not visible
        assert len(st.segments) == 1 and st.verify() == []
        listed = {s.name for s in st.segments}
    on_store = {c.name for c in (loc / "index.zarr" / "segments").iterdir() if c.is_dir()}
    assert on_store - listed == {"seg-000002"}  # the half-committed segment, garbage
    code, _, err = run_cli(_build_argv(world, out, "--resume"))
    assert code == 0, err
    assert run_cli(["verify", out])[0] == 0
    assert_same_index(out, world["local"])
    with IndexReader.open(out) as st:
        names = {c.name for c in (loc / "index.zarr" / "segments").iterdir() if c.is_dir()}
        assert names == {s.name for s in st.segments}  # the leftover was collected


def test_damaged_object_is_one_line(world) -> None:
    src, dst = Location(URL), Location(f"s3://{BUCKET}/damaged")
    src.fs.copy(src.fs_path, dst.fs_path, recursive=True)
    gaps = dst / "index.zarr/segments/seg-000001/L1/h0/pos_gaps/c/0"
    gaps.write_bytes(b"\x00garbage" * 8)
    code, _, err = run_cli(["verify", str(dst)])
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err
    assert any("seg-000001" in line and "pos_gaps" in line for line in lines)
    assert lines[-1].startswith("s3-index: error: ") and "problem" in lines[-1]
    (dst / "manifest.json").write_bytes(b"{not json")
    code, _, err = run_cli(["info", str(dst)])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "manifest.json" in err, err


def test_gc_keeps_replaced_segments_for_the_grace_period(world, monkeypatch) -> None:
    src, dst = Location(URL), Location(f"s3://{BUCKET}/merged")
    src.fs.copy(src.fs_path, dst.fs_path, recursive=True)
    with IndexWriter.open(str(dst)) as w:
        old = {s.name for s in w.segments}
        assert w.merge(into_one=True) == len(old)
        assert set(w.last_gc.pending) == old  # a reader of the old generation may still read them
    monkeypatch.setenv("S3ATTN_REMOTE_GC_GRACE_S", "0")
    code, out, err = run_cli(["gc", str(dst)])
    assert code == 0, err
    assert f"deleted {len(old)} segment folders" in out
    assert_same_index(str(dst), world["local"], exact_acts=False)


def test_bad_storage_options_and_unreachable_endpoint(world) -> None:
    code, _, err = run_cli(["info", URL, "--storage-options", "{oops"])
    assert code == 2 and "--storage-options" in err and len(err.strip().splitlines()) == 1
    opts = json.dumps(
        {"endpoint_url": "http://127.0.0.1:9", "config_kwargs": {"retries": {"max_attempts": 1}}}
    )
    code, _, err = run_cli(["info", URL, "--storage-options", opts])
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_two_ranks_build_into_the_url(world) -> None:
    """`--devices 2` into s3://: each rank stages its segments on the store, rank 0 absorbs them there; every
    document ends with the tokens and postings of the one-process build."""
    out = f"s3://{BUCKET}/ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = _build_argv(world, out, "--devices", "2", "--accelerator", "cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "s3attn.index_builder.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert run_cli(["verify", out])[0] == 0
    assert_same_documents(out, world["local"])
