"""A two-node build on one machine: two processes started as a cluster launcher starts them (gloo on CPU,
``MASTER_ADDR`` / ``MASTER_PORT`` / ``NODE_RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``), ``--num-nodes 2
--devices 1``, both writing into the same ``--out``. Every document ends with the same tokens and postings
as in a one-process build, read through the reader API."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import filler_words, make_tiny_release, save_tiny_model_dir

from s3attn.index_builder.pipeline import STAGING_DIR
from s3attn.index_builder.reader import IndexReader, doc_ranges

DOCS = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _per_document(index: Path) -> dict[str, tuple[np.ndarray, dict]]:
    """path -> (tokens, {(layer, head): (relative position, feature) rows sorted, their acts})."""
    out = {}
    with IndexReader.open(index) as st:
        paths = {d.doc_id: d.path for d in st.documents()}
        toks = st.tokens(0, st.num_tokens)
        feats = np.arange(st.meta.num_latents)
        heads = {key: st.postings(*key, feats) for key in st.heads}
        for doc_id, s, e in doc_ranges(st):
            rows = {}
            for key, post in heads.items():
                inside = (post.positions >= s) & (post.positions < e)
                pos, feat, act = post.positions[inside] - s, post.feature_slot[inside], post.acts[inside]
                order = np.lexsort((feat, pos))
                rows[key] = (np.stack([pos[order], feat[order]], axis=1), act[order])
            out[paths[doc_id]] = (toks[s:e], rows)
    return out


def _build(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as err:  # a file, not a pipe: a full pipe would block the child
        return subprocess.Popen(
            [sys.executable, "-m", "s3attn.index_builder.cli", *argv],
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **env},
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )


def test_two_nodes_build_the_same_index(tmp_path: Path) -> None:
    model = save_tiny_model_dir(tmp_path / "model")
    release = make_tiny_release(tmp_path / "release", model)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(DOCS):
        (corpus / f"d{i}.txt").write_text(filler_words(90 + 20 * i, i) + "\n")

    def argv(out: Path, *extra: str) -> list[str]:
        return [
            "build", str(corpus), "--out", str(out), "--sae", str(release), "--model", str(model),
            "--chunk", "64", "--overlap", "8", "--segment-tokens", "128", "--merge-tier", "0",
            "--accelerator", "cpu", "--no-progress", *extra,
        ]  # fmt: skip

    one = _build(argv(tmp_path / "one"), {}, tmp_path / "one.log")
    assert one.wait(timeout=120) == 0, (tmp_path / "one.log").read_text()[-3000:]

    out, port = tmp_path / "two", str(_free_port())
    launcher = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    logs = [tmp_path / f"node{node}.log" for node in (0, 1)]
    procs = [
        _build(argv(out, "--num-nodes", "2", "--devices", "1"), {**launcher, "NODE_RANK": str(n)}, logs[n])
        for n in (0, 1)
    ]
    try:
        for node, proc in enumerate(procs):
            assert proc.wait(timeout=180) == 0, f"node {node}: {logs[node].read_text()[-3000:]}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert not (out / STAGING_DIR).exists()
    with IndexReader.open(out) as st:
        assert st.verify() == []
        names = [s.name for s in st.segments]
    assert len({n.rsplit("-", 1)[0] for n in names}) == 2, names  # absorbed from the two nodes' staging

    ours, ref = _per_document(out), _per_document(tmp_path / "one")
    assert ours.keys() == ref.keys() and len(ref) == DOCS
    for path, (toks, rows) in ref.items():
        np.testing.assert_array_equal(ours[path][0], toks, err_msg=path)
        for key, (pos_feat, acts) in rows.items():
            np.testing.assert_array_equal(ours[path][1][key][0], pos_feat, err_msg=f"{path} {key}")
            # act_scale is per segment (a power of two): documents grouped otherwise may quantize otherwise
            tol = np.log1p(2 * max(acts.max(), ours[path][1][key][1].max())) / 510 + 1e-6
            assert np.abs(np.log1p(ours[path][1][key][1]) - np.log1p(acts)).max() <= tol, (path, key)
