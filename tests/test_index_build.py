"""End-to-end tests of ``s3-index build`` on a tiny Llama + a tiny SAE release made in-process.

One clean build of a small corpus (one document large enough to be written in several ``open_doc`` pieces)
is the reference: the index holds every token of every document with exactly k postings per (layer, KV
head), its codes equal a direct tap + encode over the same left context, a build killed (SIGKILL, real
subprocess) and finished with ``--resume`` equals it posting for posting, appending indexes only new
documents, merging keeps postings, BM25 finds a planted word, and bad input exits 2 with one line.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_WORDS, assert_same_documents, save_tiny_model_dir

import s3attn.corpus as corpus_mod
import s3attn.index_builder.build as build_mod
import s3attn.index_builder.pipeline as pipeline_mod
import s3attn.index_builder.reader as reader_mod
from s3attn.constants import BM25_DIR, INDEX_MANIFEST
from s3attn.corpus import BLOCK_CHARS, Document
from s3attn.index_builder.bm25 import BM25Index
from s3attn.index_builder.cli import main
from s3attn.index_builder.indexer import IndexWriter
from s3attn.index_builder.prefill import plan_chunks
from s3attn.index_builder.reader import IndexReader
from s3attn.models.precision import resolve_dtype
from s3attn.models.taps import tap_heads
from s3attn.saes import SaeConfig, SaeMeta, TopKSAE, load_many, write_release

LAYERS = [1, 3]
F, K, KV = 64, 4, 2
CHUNK, OVERLAP, SEG = 16, 4, 64
RARE, ABSENT, NEW_WORD = "paris", "king", "queen"  # planted once / never / only in the appended file
COMMON = [w for w in TINY_WORDS if w not in (RARE, ABSENT, NEW_WORD)]
# (name, words): b_big is ~5 segments long, so it is written as open_doc pieces closed by the last one
DOCS = {"a.txt": 30, "b_big.md": 300, "c.txt": 40}
JSONL_ROWS = (20, 20)
RARE_AT = 11  # word index of RARE inside c.txt


# ---- fixtures ----------------------------------------------------------------------------------------
def _words(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(COMMON) for _ in range(n)]


def _release(out: Path, model_id: str, name: str, seed: int) -> Path:
    torch.manual_seed(seed)
    saes = {layer: TopKSAE(SaeConfig(d_in=16, num_latents=F, k=K)) for layer in LAYERS}
    metas = {
        layer: SaeMeta(model_id=model_id, layer=layer, sites=("k", "q"), head_dim=16) for layer in LAYERS
    }
    info = {
        "model_id": model_id,
        "dataset": "tiny",
        "dataset_license": "n/a",
        "context_length": 32,
        "name": name,
    }
    return write_release(out, saes, metas, info)


class World:
    """Paths of the shared tiny model, releases, corpus and the reference index."""

    def __init__(self, root: Path) -> None:
        from s3attn.models.loading import load_model

        self.root = root
        self.model = save_tiny_model_dir(root / "m", "llama")
        self.loaded = load_model(str(self.model), dtype=resolve_dtype("auto", "cpu"))  # as the builds load it
        self.tok = self.loaded.tokenizer
        self.rel = _release(root / "rel", self.loaded.model_id, "tiny-rel", 0)
        self.rel_b = _release(root / "rel_b", self.loaded.model_id, "tiny-rel-b", 1)
        self.rel_other = _release(root / "rel_other", "someone/other-model", "tiny-rel", 0)
        self.corpus = root / "corpus"
        self.corpus.mkdir()
        rng = random.Random(0)
        self.texts: dict[str, str] = {}
        for name, n in DOCS.items():
            words = _words(rng, n)
            if name == "c.txt":
                words[RARE_AT] = RARE
            self.texts[name] = " ".join(words) + "\n"
            (self.corpus / name).write_text(self.texts[name])
        rows = [" ".join(_words(rng, n)) for n in JSONL_ROWS]
        (self.corpus / "d.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
        self.texts.update({f"d.jsonl#{i}": t for i, t in enumerate(rows, start=1)})
        (self.corpus / ".hidden.txt").write_text("the city\n")
        (self.corpus / "bin.txt").write_bytes(b"the\x00city\x00\x01\x02")
        self.index = root / "index"

    def args(self, corpus: Path, out: Path, *extra: str, sae: Path | None = None) -> list[str]:
        return [
            "build",
            str(corpus),
            "--out",
            str(out),
            "--sae",
            str(sae or self.rel),
            "--model",
            str(self.model),
            "--chunk",
            str(CHUNK),
            "--overlap",
            str(OVERLAP),
            "--segment-tokens",
            str(SEG),
            "--merge-tier",
            "0",
            "--no-progress",
            *extra,
        ]

    def ids(self, path: str) -> list[int]:
        return self.tok(self.texts[path], add_special_tokens=False)["input_ids"]


class _CliFormat(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``s3-index`` in-process: (exit code, stderr, with the library's INFO log lines, as the CLI shows them)."""
    err = io.StringIO()
    log, handler = logging.getLogger("s3attn"), logging.StreamHandler(err)
    # the library logs; shown as the CLI shows it (INFO plain, WARNING as "warning: ..."), unless the CLI
    # put a handler of its own on the s3attn logger
    handler.setFormatter(_CliFormat())
    handler.addFilter(lambda record: log.handlers == [handler])
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        finally:
            log.removeHandler(handler)
            log.setLevel(level)
    return int(code or 0), err.getvalue()


def error_line(code: int, err: str) -> str:
    """The one ``s3-index: error:`` line of a failed command (exit 2, no traceback)."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("s3-index: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """Tiny model + releases + corpus, and the reference build (one thread: the CPU is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    w = World(tmp_path_factory.mktemp("ib"))
    stacks: dict[str, tuple] = {}
    real_load_stack = pipeline_mod.load_stack

    def cached_load_stack(release, rel_cfg, layers, model, **kw):  # the model loads once per release
        key = f"{Path(release).resolve()}|{layers}|{model}|{kw}"
        if key not in stacks:
            stacks[key] = real_load_stack(release, rel_cfg, layers, model, **kw)
        return stacks[key]

    mp = pytest.MonkeyPatch()
    mp.setattr(pipeline_mod, "load_stack", cached_load_stack)
    code, w.build_err = run_cli(w.args(w.corpus, w.index))
    assert code == 0, w.build_err
    yield w
    mp.undo()
    torch.set_num_threads(threads)


def content(index: Path) -> tuple[list, np.ndarray, dict]:
    """Documents table, all tokens, and every (layer, head)'s postings of every feature."""
    with IndexReader.open(index) as st:
        heads = {h: st.postings(*h, np.arange(F)) for h in st.heads}
        return st.documents(), st.tokens(0, st.num_tokens), heads


def assert_same_postings(a: Path, b: Path, *, exact_acts: bool = True) -> None:
    docs_a, toks_a, heads_a = content(a)
    docs_b, toks_b, heads_b = content(b)
    assert [(d.doc_id, d.path, d.content_hash, d.token_start, d.num_tokens) for d in docs_a] == [
        (d.doc_id, d.path, d.content_hash, d.token_start, d.num_tokens) for d in docs_b
    ]
    np.testing.assert_array_equal(toks_a, toks_b)
    assert heads_a.keys() == heads_b.keys()
    for key, pa in heads_a.items():
        pb = heads_b[key]
        np.testing.assert_array_equal(pa.positions, pb.positions, err_msg=str(key))
        np.testing.assert_array_equal(pa.feature_slot, pb.feature_slot, err_msg=str(key))
        if exact_acts:
            np.testing.assert_array_equal(pa.acts, pb.acts, err_msg=str(key))
        else:  # re-quantized on a coarser grid: within half a log step of the larger scale
            tol = np.log1p(2 * max(pa.acts.max(), pb.acts.max())) / 510 + 1e-6
            assert np.abs(np.log1p(pa.acts) - np.log1p(pb.acts)).max() <= tol, key


def doc_ranges(index: Path) -> dict[str, tuple[int, int, int]]:
    """path -> (doc_id, start, end), pieces of one document joined."""
    with IndexReader.open(index) as st:
        return {
            next(d.path for d in st.documents() if d.doc_id == doc_id): (doc_id, s, e)
            for doc_id, s, e in reader_mod.doc_ranges(st)
        }


def snapshot(index: Path) -> tuple[str, list[str]]:
    """What must not change when a build is refused: the manifest and the set of files."""
    files = sorted(str(p.relative_to(index)) for p in index.rglob("*") if p.name != "index.lock")
    return (index / INDEX_MANIFEST).read_text(), files


def assert_verifies(index: Path) -> None:
    code, err = run_cli(["verify", str(index)])
    assert code == 0, err


@pytest.fixture
def spare(world: World, tmp_path: Path) -> Path:
    """A private copy of the reference index."""
    out = tmp_path / "spare"
    shutil.copytree(world.index, out)
    return out


# ---- 1. build -> info -> verify; every token; k postings; codes = direct tap ----------------------------
def test_build_info_verify_every_token_k_postings(world: World, capsys) -> None:
    assert_verifies(world.index)
    capsys.readouterr()
    assert main(["info", str(world.index), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    ranges = doc_ranges(world.index)
    assert sorted(ranges) == sorted(world.texts)  # hidden and binary files are not indexed
    assert info["documents"] == len(world.texts) == 5
    assert info["tokens"] == sum(len(world.ids(p)) for p in world.texts)
    assert info["postings"] == info["tokens"] * K * len(LAYERS) * KV
    assert sorted(doc_id for doc_id, _, _ in ranges.values()) == list(range(5))
    with IndexReader.open(world.index) as st:
        for path, (_doc_id, start, end) in ranges.items():  # the index holds exactly each doc's tokens
            assert st.tokens(start, end).tolist() == world.ids(path), path
        assert [d.token_start for d in st.documents()] == sorted(d.token_start for d in st.documents())
        pieces = [d for d in st.documents() if d.path == "b_big.md"]
        assert len(pieces) >= 4 and sum(s.open_doc for s in st.segments) == len(pieces) - 1
        assert max(s.num_tokens for s in st.segments) <= SEG
        for layer, h in st.heads:
            post = st.postings(layer, h, np.arange(F))
            per_token = np.bincount(post.positions, minlength=st.num_tokens)
            assert per_token.shape == (st.num_tokens,) and (per_token == K).all(), (layer, h)
            pairs = post.positions * F + post.feature_slot  # a token's k features are distinct
            assert np.unique(pairs).size == pairs.size
            assert (post.acts >= 0).all() and np.isfinite(post.acts).all()


def test_hidden_and_binary_files_skipped_with_a_warning(world: World) -> None:
    warnings = [line for line in world.build_err.splitlines() if line.startswith("warning: skipping")]
    assert any(".hidden.txt" in line and "hidden" in line for line in warnings), world.build_err
    assert any("bin.txt" in line and "binary" in line for line in warnings), world.build_err
    assert not {".hidden.txt", "bin.txt"} & set(doc_ranges(world.index))


@torch.no_grad()
def test_stored_codes_equal_a_direct_tap_over_the_same_left_context(world: World) -> None:
    """Re-derive b_big's codes chunk by chunk (tap the chunk with its overlap, encode each head)."""
    saes = load_many(world.rel)
    ids = world.ids("b_big.md")
    _, start, end = doc_ranges(world.index)["b_big.md"]
    assert end - start == len(ids)
    with IndexReader.open(world.index) as st:
        for layer in LAYERS:
            for h in range(KV):
                post = st.postings(layer, h, np.arange(F))
                inside = (post.positions >= start) & (post.positions < end)
                got = {
                    (int(p) - start, int(f)): float(a)
                    for p, f, a in zip(post.positions[inside], post.feature_slot[inside], post.acts[inside])
                }
                want: dict[tuple[int, int], float] = {}
                for ctx, s, e in plan_chunks(len(ids), CHUNK, OVERLAP):
                    taps = tap_heads(world.loaded.model, torch.tensor([ids[ctx:e]]), LAYERS, sites=("k",))
                    enc = saes[layer].encode(taps.keys[layer][0, s - ctx :, h])
                    for t, (fs, acts) in enumerate(zip(enc.top_indices.tolist(), enc.top_acts.tolist())):
                        want.update({(s + t, f): a for f, a in zip(fs, acts)})
                assert got.keys() == want.keys(), (layer, h)
                g = np.array([got[x] for x in want])
                v = np.array(list(want.values()))
                tol = np.log1p(2 * v.max()) / 510 + 2e-3  # u8 log quantization + float16 in RAM
                assert np.abs(np.log1p(g) - np.log1p(v)).max() <= tol, (layer, h)


# ---- 2. crash safety --------------------------------------------------------------------------------
DRIVER = r"""
import json, os, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
import s3attn.index_builder.indexer as store_mod
from s3attn.index_builder.cli import main

where, marker, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

def pause():
    marker.write_text(str(os.getpid()))
    time.sleep(600)

if where == "create":  # index.zarr created, manifest.json not yet written
    store_mod.atomic_write_json = lambda path, obj: pause()
elif where == "open-tail":  # a segment half written while open_doc pieces are live in the manifest
    real = store_mod.write_segment_arrays
    def hook(seg, token_ids, heads, docs):
        sums = real(seg, token_ids, heads, docs)
        manifest = json.loads((out / "manifest.json").read_text())
        if any(s.get("open_doc") for s in manifest["segments"]):
            pause()
        return sums
    store_mod.write_segment_arrays = hook
sys.exit(main(sys.argv[4:]))
"""


def _start_killable(world: World, where: str, out: Path) -> tuple[subprocess.Popen, Path, Path]:
    marker, log = out.parent / f"{out.name}.paused", out.parent / f"{out.name}.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as err:  # a file, not a pipe: a full pipe would block the child
        proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, where, str(marker), str(out), *world.args(world.corpus, out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    return proc, marker, log


def _kill_when_paused(proc: subprocess.Popen, marker: Path, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the build exited ({proc.returncode}) before its kill point:\n{log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the build never reached its kill point:\n{log.read_text()}")
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_killed_builds_resume_to_the_clean_index(world: World, tmp_path: Path) -> None:
    runs = {where: _start_killable(world, where, tmp_path / where) for where in ("open-tail", "create")}
    for proc, marker, log in runs.values():
        _kill_when_paused(proc, marker, log)

    tail = tmp_path / "open-tail"
    with IndexReader.open(tail) as st:  # killed mid-document: an open tail and a half-written temp segment
        assert st.has_open_tail() and st.verify() == []
    assert any(p.name.startswith(".tmp-") for p in (tail / "index.zarr" / "segments").iterdir())
    before = (tail / INDEX_MANIFEST).read_text()
    line = error_line(*run_cli(world.args(world.corpus, tail)))  # no --resume: refused, nothing changed
    assert "--resume" in line and "interrupted" in line
    assert (tail / INDEX_MANIFEST).read_text() == before

    early = tmp_path / "create"
    assert (early / "index.zarr").is_dir() and not (early / INDEX_MANIFEST).exists()

    for out in (tail, early):
        code, err = run_cli(world.args(world.corpus, out, "--resume"))
        assert code == 0, err
        assert_verifies(out)
        assert_same_postings(out, world.index)
        assert not any(p.name.startswith(".tmp-") for p in (out / "index.zarr" / "segments").iterdir())
        bm25, ref = BM25Index.load(out / BM25_DIR), BM25Index.load(world.index / BM25_DIR)
        np.testing.assert_array_equal(bm25.passages_P3, ref.passages_P3)
        assert bm25.texts == ref.texts


def test_failed_write_exits_2_and_resume_finishes(world: World, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "full-disk"
    real_add = IndexWriter.add_segment
    calls = []

    def add_segment(self, data, *, open_doc=False):
        calls.append(open_doc)
        if len(calls) == 3:  # after one closed segment and one open piece of b_big
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_add(self, data, open_doc=open_doc)

    monkeypatch.setattr(IndexWriter, "add_segment", add_segment)
    line = error_line(*run_cli(world.args(world.corpus, out)))
    assert f"failed writing {out}: No space left on device" in line and "--resume" in line
    assert calls == [False, True, True]
    assert_verifies(out)
    with IndexReader.open(out) as st:
        assert st.has_open_tail() and len(st.segments) == 2
    monkeypatch.setattr(IndexWriter, "add_segment", real_add)
    code, err = run_cli(world.args(world.corpus, out, "--resume"))
    assert code == 0, err
    assert_same_postings(out, world.index)


def test_unreadable_file_during_prefill_exits_2(world: World, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "idx"
    real_blocks = Document.blocks

    def blocks(self, *args, **kwargs):  # fails when read, as a file made unreadable after listing does
        if self.path == "c.txt":
            raise PermissionError(errno.EACCES, "Permission denied", str(self.file))
        yield from real_blocks(self, *args, **kwargs)

    monkeypatch.setattr(Document, "blocks", blocks)
    line = error_line(*run_cli(world.args(world.corpus, out)))
    assert f"{world.corpus / 'c.txt'}: cannot be read (Permission denied)" in line
    assert_verifies(out)


# ---- 3. appending -----------------------------------------------------------------------------------
def test_append_indexes_only_new_documents(world: World, spare: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(world.corpus, corpus)
    new_text = " ".join([*_words(random.Random(5), 24), NEW_WORD])
    (corpus / "e.txt").write_text(new_text)
    with IndexReader.open(spare) as st:
        old_segments, old_docs, old_tokens = st.segments, st.documents(), st.num_tokens
    code, err = run_cli(world.args(corpus, spare))
    assert code == 0, err
    new_ids = world.tok(new_text, add_special_tokens=False)["input_ids"]
    with IndexReader.open(spare) as st:
        assert st.segments[: len(old_segments)] == old_segments and len(st.segments) == len(old_segments) + 1
        assert st.documents()[: len(old_docs)] == old_docs
        (new_doc,) = st.documents()[len(old_docs) :]
        assert (new_doc.doc_id, new_doc.path, new_doc.token_start) == (5, "e.txt", old_tokens)
        assert st.num_tokens == old_tokens + len(new_ids) == new_doc.token_start + new_doc.num_tokens
        assert st.tokens(old_tokens, st.num_tokens).tolist() == new_ids
    assert_verifies(spare)
    hits = BM25Index.load(spare / BM25_DIR).search(NEW_WORD, 3)
    assert len(hits) == 1 and hits[0].passage.doc_id == 5 and hits[0].passage.end == old_tokens + len(new_ids)

    before = snapshot(spare)
    code, err = run_cli(world.args(corpus, spare))  # the same corpus again: nothing to add
    assert code == 0 and "nothing to add" in err, err
    assert snapshot(spare) == before


# ---- 4. merge ---------------------------------------------------------------------------------------
def test_merge_reduces_segments_and_keeps_postings(world: World, spare: Path) -> None:
    n_before = len(json.loads((spare / INDEX_MANIFEST).read_text())["segments"])
    code, err = run_cli(["merge", str(spare), "--tier", "2"])
    assert code == 0, err
    n_tier = len(json.loads((spare / INDEX_MANIFEST).read_text())["segments"])
    assert 1 <= n_tier < n_before
    assert_verifies(spare)
    assert_same_postings(spare, world.index, exact_acts=False)
    code, err = run_cli(["merge", str(spare), "--all"])
    assert code == 0, err
    assert "merging" in err and "posting" in err  # a progress bar of postings merged
    assert len(json.loads((spare / INDEX_MANIFEST).read_text())["segments"]) == 1
    assert_verifies(spare)
    assert_same_postings(spare, world.index, exact_acts=False)


def test_build_merge_all_leaves_one_segment(world: World, spare: Path) -> None:
    """``--merge-all``: after the build (here: nothing new to add) every segment is merged into one, with the
    same postings."""
    assert len(json.loads((spare / INDEX_MANIFEST).read_text())["segments"]) > 1
    code, err = run_cli(world.args(world.corpus, spare, "--merge-all"))
    assert code == 0 and "nothing to add" in err, err
    assert len(json.loads((spare / INDEX_MANIFEST).read_text())["segments"]) == 1
    assert_verifies(spare)
    assert_same_postings(spare, world.index, exact_acts=False)


# ---- 5. BM25 ----------------------------------------------------------------------------------------
def test_bm25_finds_the_planted_rare_word(world: World) -> None:
    doc_id, start, _ = doc_ranges(world.index)["c.txt"]
    rare_id = world.tok.convert_tokens_to_ids(RARE)
    with IndexReader.open(world.index) as st:
        where = np.flatnonzero(st.tokens(0, st.num_tokens) == rare_id)
    assert where.tolist() == [start + RARE_AT]  # planted exactly once
    bm25 = BM25Index.load(world.index / BM25_DIR)
    hits = bm25.search(f"where is {RARE.capitalize()}?", 5)
    assert hits and all(h.passage.start <= start + RARE_AT < h.passage.end for h in hits)
    assert hits[0].passage.doc_id == doc_id and RARE in hits[0].terms
    assert bm25.search(ABSENT, 5) == []


# ---- 6. bad input -----------------------------------------------------------------------------------
def test_empty_corpus_folder(world: World, spare: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    before = snapshot(spare)
    line = error_line(*run_cli(world.args(tmp_path / "empty", spare)))
    assert "empty" in line and "no .txt" in line
    assert snapshot(spare) == before


@pytest.mark.parametrize("how", ["permission", "broken-link"])
def test_unreadable_file(world: World, spare: Path, tmp_path: Path, monkeypatch, how: str) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(world.corpus, corpus)
    bad = corpus / "locked.txt"
    if how == "permission":  # tests run as root, where chmod 000 still reads: deny it at open()
        bad.write_text("the city")
        real_open = open

        def deny(file, *args, **kwargs):
            if Path(file) == bad:
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(corpus_mod, "open", deny, raising=False)
    else:
        bad.symlink_to(tmp_path / "nowhere.txt")
    before = snapshot(spare)
    line = error_line(*run_cli(world.args(corpus, spare)))
    assert str(bad) in line and "cannot be read" in line
    assert snapshot(spare) == before


def test_non_utf8_file(world: World, spare: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(world.corpus, corpus)
    (corpus / "latin1.txt").write_bytes("the caf\xe9 of paris".encode("latin-1"))
    before = snapshot(spare)
    line = error_line(*run_cli(world.args(corpus, spare)))
    assert "latin1.txt" in line and "UTF-8" in line and "--skip-bad-files" in line
    assert snapshot(spare) == before
    code, err = run_cli(world.args(corpus, spare, "--skip-bad-files"))
    assert code == 0, err
    assert any("latin1.txt" in line for line in err.splitlines() if line.startswith("warning: skipping"))
    assert "nothing to add" in err and snapshot(spare) == before


@pytest.mark.parametrize(("chunk", "overlap"), [("16", "16"), ("0", "0"), ("16", "-1")])
def test_bad_chunk_or_overlap(world: World, tmp_path: Path, chunk: str, overlap: str) -> None:
    args = world.args(world.corpus, tmp_path / "idx")
    args[args.index("--chunk") + 1], args[args.index("--overlap") + 1] = chunk, overlap
    line = error_line(*run_cli(args))
    assert f"--chunk {chunk} / --overlap {overlap}" in line and "overlap < chunk" in line
    assert not (tmp_path / "idx").exists()


def test_release_for_another_model(world: World, tmp_path: Path) -> None:
    line = error_line(*run_cli(world.args(world.corpus, tmp_path / "idx", sae=world.rel_other)))
    assert "someone/other-model" in line
    assert not (tmp_path / "idx").exists()


def test_out_holds_another_index_or_other_files(world: World, spare: Path, tmp_path: Path) -> None:
    before = snapshot(spare)
    line = error_line(*run_cli(world.args(world.corpus, spare, sae=world.rel_b)))
    assert "tiny-rel-b" in line and str(spare) in line
    assert snapshot(spare) == before
    assert_verifies(spare)

    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    line = error_line(*run_cli(world.args(world.corpus, other)))
    assert "not empty" in line and str(other) in line
    assert sorted(p.name for p in other.iterdir()) == ["cat.jpg"]


# ---- bounded memory on one huge line ---------------------------------------------------------------
def _one_line_file(path: Path, mbytes: int) -> int:
    """``mbytes`` MB on one line: unknown 995-letter words (one [UNK] each) + 'the', ending in 'paris river'.
    Returns its token count."""
    unit = "q" * 995 + " the "
    reps = mbytes * 1000
    with open(path, "w") as fh:
        for _ in range(reps // 1000):
            fh.write(unit * 1000)
        fh.write("paris river")
    return 2 * reps + 2


def _bounded_build(
    world: World, tmp_path: Path, monkeypatch, *, mbytes: int, chunk: int, seg: int, trace: bool
) -> float:
    """Build a one-line file; check what the accumulator and the tokenizer ever held; return the
    tracemalloc peak of the build (0 unless ``trace``)."""
    import tracemalloc

    corpus = tmp_path / "huge"
    corpus.mkdir()
    n_tokens = _one_line_file(corpus / "line.txt", mbytes)
    held, block_chars = [0], [0]
    real_add, real_blocks = build_mod.SegmentAccumulator.add, Document.blocks

    def add(self, cc, last):
        real_add(self, cc, last)
        held[0] = max(held[0], self.n)

    def blocks(self, *args, **kwargs):
        for block in real_blocks(self, *args, **kwargs):
            block_chars[0] = max(block_chars[0], len(block))
            yield block

    monkeypatch.setattr(build_mod.SegmentAccumulator, "add", add)
    monkeypatch.setattr(Document, "blocks", blocks)
    out = tmp_path / "idx"
    args = world.args(corpus, out)
    args[args.index("--chunk") + 1], args[args.index("--segment-tokens") + 1] = str(chunk), str(seg)
    peak = 0
    if trace:
        tracemalloc.start()
    try:
        code, err = run_cli(args)
        if trace:
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 0, err
    assert 0 < held[0] <= seg + chunk  # codes in RAM: at most one segment and one chunk
    assert 0 < block_chars[0] <= BLOCK_CHARS  # the line reached the tokenizer in blocks, never whole
    with IndexReader.open(out) as st:
        assert st.num_tokens == n_tokens and st.verify() == []
        assert max(s.num_tokens for s in st.segments) <= seg and len(st.segments) >= n_tokens // seg
        assert [d.path for d in st.documents()] == ["line.txt"] * len(st.segments)
        tail = world.tok.decode(st.tokens(n_tokens - 3, n_tokens).tolist())
    assert tail.split()[-2:] == ["paris", "river"]
    return peak


def test_one_line_file_in_bounded_memory(world: World, tmp_path: Path, monkeypatch) -> None:
    _bounded_build(world, tmp_path, monkeypatch, mbytes=2, chunk=64, seg=1024, trace=False)


@pytest.mark.slow
def test_50mb_one_line_file_in_bounded_memory(world: World, tmp_path: Path, monkeypatch) -> None:
    """~1 minute: 50 MB on one line (100k tokens); Python-side memory stays far below the file size."""
    peak = _bounded_build(world, tmp_path, monkeypatch, mbytes=50, chunk=256, seg=8192, trace=True)
    assert peak < 25e6, f"tracemalloc peak {peak / 1e6:.1f} MB for a 50 MB file"


# ---- multi-device: documents dealt to 2 ranks, each writing its own segments --------------------------
def test_two_ranks_index_the_same_postings(world: World, tmp_path: Path) -> None:
    """`--devices 2` (Lightning DDP on CPU, gloo): each rank stages its own segments, rank 0 absorbs them;
    every document ends with the same tokens and postings as in the one-process build."""
    out = tmp_path / "ddp"
    argv = [a for a in world.args(world.corpus, out) if a != "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "s3attn.index_builder.cli",
            *argv,
            "--devices",
            "2",
            "--accelerator",
            "cpu",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        start_new_session=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (out / pipeline_mod.STAGING_DIR).exists()
    names = [e["name"] for e in json.loads((out / INDEX_MANIFEST).read_text())["segments"]]
    assert len({n.rsplit("-", 1)[0] for n in names}) == 2, names  # absorbed from two staging indexes
    assert_verifies(out)
    assert_same_documents(out, world.index)
