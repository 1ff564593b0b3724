"""Shared pieces of the retrieval benches (``bench_retrieval.py``, ``bench_scale.py``): a real seed index,
its dense codes, tiled indexes written from shuffled 2048-token blocks of it, the questions, the OS page-cache
warm-up and the rotated per-mode timing.

A tiled index keeps the real feature statistics of the seed's text (its codes come from SmolLM2 + the
release's SAEs) while reaching sizes a 2-core CPU cannot prefill: every document is one seed block.
"""

from __future__ import annotations

import json
import mmap
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from s3attn.constants import INDEX_FORMAT_VERSION
from s3attn.evaluation.tasks import paul_graham_text
from s3attn.index_builder.build import run_prefill
from s3attn.index_builder.indexer import IndexWriter
from s3attn.index_builder.pipeline import index_attrs, rebuild_bm25
from s3attn.index_builder.schema import (
    ACT_CHUNK,
    GAP_CHUNK,
    GAP_SHARD,
    GAPS_CODEC,
    TOKEN_CHUNK,
    DocRecord,
    SegmentData,
)
from s3attn.retrieval.retriever import Retriever

BLOCK = 2048  # tokens per tiled block (= one document of a tiled index)
LAYOUT = {  # the writer's layout: a tiled index built in another is rebuilt
    "format": INDEX_FORMAT_VERSION,
    "gap_chunk": GAP_CHUNK,
    "gap_shard": GAP_SHARD,
    "act_chunk": ACT_CHUNK,
    "gaps_codec": f"{GAPS_CODEC.cname.value}{GAPS_CODEC.clevel}",
    "token_chunk": TOKEN_CHUNK,
}
UNITS = {"k": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """A count with an optional k / M / G suffix (powers of two): ``4M`` -> 4194304."""
    return int(text[:-1]) * UNITS[text[-1]] if text[-1] in UNITS else int(text)


QUESTIONS = (
    "What do startups need to do to survive? | Why is the App Store approval process broken? | What makes "
    "things addictive? | How should founders think about fundraising? | What is the best way to come up "
    "with startup ideas? | Why do some programmers dislike Apple? | What is default alive? | How do good "
    "essays get written? | What did the author learn from Lisp? | Why are cities important for ambition? "
    "| What is the role of investors? | How do you hire programmers? | What makes a good programmer? | "
    "Why do schools teach badly? | How do you get users? | What is wrong with meetings? | How should you "
    "pick a cofounder? | Why is wealth not zero-sum? | What does it mean to be relentlessly resourceful? "
    "| How does the web change publishing?"
).split(" | ")
WARMUP = "Which programming language did the author write his first startup in?"  # never timed
MODES = ("s3", "hybrid", "bm25")
# the latency benches time reading the index: hybrid with the model-free adaptive fusion (the default,
# likelihood, adds a forward pass over the candidates, the same at every index size)
SCAN_FUSION = "adaptive"


def scan_config():
    """The ``RetrievalConfig`` of the latency benches (hybrid fused by ``SCAN_FUSION``)."""
    from s3attn.retrieval.fusion import FusionConfig
    from s3attn.retrieval.retriever import RetrievalConfig

    return RetrievalConfig(hybrid=FusionConfig(fusion=SCAN_FUSION))


READ_KEYS = ("chunk_hits", "chunk_misses", "lists", "postings", "lists_skipped", "tiers")


def attrs_for(stack, release: Path, layers: list[int]) -> dict:
    """The index attributes of an index built with ``stack`` (2048-token chunks, 64 of overlap)."""
    from s3attn.saes.checkpoint import read_release_config

    return index_attrs(stack, release, read_release_config(release), layers, chunk=BLOCK, overlap=64)


def doc_folder(
    work: Path, name: str, tokenizer, n_tokens: int, text: Callable[[], str] = paul_graham_text
) -> Path:
    """A corpus folder ``work/name`` of one document: the first ``n_tokens`` tokens of ``text()`` (repeated
    when it is shorter)."""
    ids = tokenizer(text(), add_special_tokens=False)["input_ids"]
    ids = (ids * (n_tokens // len(ids) + 1))[:n_tokens]
    folder = work / name
    folder.mkdir()
    (folder / "essays.txt").write_text(tokenizer.decode(ids))
    return folder


def seed_index(
    stack,
    release,
    layers,
    work: Path,
    seed_tokens: int,
    *,
    text: Callable[[], str] = paul_graham_text,
    progress: bool = False,
) -> Path:
    """A real index of ``seed_tokens`` tokens of ``text()`` (one segment) at ``work/seed_idx``. Reused when a
    finished one of the same tokens and text is there (``seed_idx.done.json``); rebuilt otherwise."""
    from s3attn.corpus import Corpus

    loaded, saes, _ = stack
    idx, done = work / "seed_idx", work / "seed_idx.done.json"
    want = {"seed_tokens": seed_tokens, "text": text.__name__, "release": str(release), "layers": layers}
    if done.is_file() and json.loads(done.read_text()) == want and (idx / "manifest.json").is_file():
        return idx
    done.unlink(missing_ok=True)
    shutil.rmtree(work / "seed", ignore_errors=True)
    shutil.rmtree(idx, ignore_errors=True)
    seed = doc_folder(work, "seed", loaded.tokenizer, seed_tokens, text)
    with IndexWriter.create(idx, attrs_for(stack, release, layers)) as st:
        run_prefill(
            loaded.model,
            saes,
            loaded.tokenizer,
            list(Corpus(seed)),
            st,
            chunk=BLOCK,
            overlap=64,
            segment_tokens=1 << 20,
            progress=progress,
        )
    done.write_text(json.dumps(want))
    return idx


def dense_codes(index: Path) -> tuple[np.ndarray, dict]:
    """Token ids [T] and dense codes per head (indices uint16 [T, k], acts float16 [T, k]) of ``index``,
    rebuilt from the postings of every feature."""
    from s3attn.index_builder.reader import IndexReader

    with IndexReader.open(index) as st:
        n, k = st.num_tokens, int(st.meta.k)
        toks = st.tokens(0, n)
        codes = {}
        feats = np.arange(int(st.meta.num_latents))
        for head in st.heads:
            post = st.postings(*head, feats)
            order = np.lexsort((post.feature_slot, post.positions))
            codes[head] = (
                post.feature_slot[order].reshape(n, k).astype(np.uint16),
                post.acts[order].reshape(n, k).astype(np.float16),
            )
    return toks, codes


class Gathered:
    """``source[sel]`` made only when asked for (``np.asarray``), so a segment's codes of every head need
    not be in memory at once: the writer builds one head at a time."""

    def __init__(self, source: np.ndarray, sel: np.ndarray) -> None:
        self.source, self.sel = source, sel
        self.shape = (int(sel.size), *source.shape[1:])
        self.dtype = source.dtype

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.source[self.sel]
        return out if dtype is None else out.astype(dtype, copy=False)


def tiled_segments(
    toks: np.ndarray, codes: dict, rng: np.random.Generator, start: int, end: int, seg_tokens: int
) -> Iterator[SegmentData]:
    """Segments of ``seg_tokens`` tokens (the last may be shorter) covering index tokens [start, end), each
    a random draw (with replacement) of the seed's whole ``BLOCK``-token blocks, one document per block."""
    starts = np.arange(0, toks.size - BLOCK + 1, BLOCK)
    at, doc = start, start // BLOCK
    while at < end:
        picks = rng.choice(starts, size=-(-min(seg_tokens, end - at) // BLOCK))
        sel = (picks[:, None] + np.arange(BLOCK)[None, :]).ravel()
        docs = [
            DocRecord(doc + i, f"tiled/{i}.txt", f"h{at}-{i}", at + i * BLOCK, BLOCK)
            for i in range(len(picks))
        ]
        yield SegmentData(
            toks[sel], docs, at, {h: (Gathered(c[0], sel), Gathered(c[1], sel)) for h, c in codes.items()}
        )
        at, doc = at + sel.size, doc + len(picks)


def tiled_index(stack, release, layers, work: Path, seed_tokens: int, index_tokens: int) -> Path:
    """``bench_retrieval``'s latency index at ``work/big_idx``: the essays' seed index tiled to
    ``index_tokens`` in 2^18-token segments, merged into one, with BM25."""
    toks, codes = dense_codes(seed_index(stack, release, layers, work, seed_tokens))
    with IndexWriter.create(work / "big_idx", attrs_for(stack, release, layers)) as big:
        end = -(-index_tokens // (1 << 18)) * (1 << 18)
        for seg in tiled_segments(toks, codes, np.random.default_rng(0), 0, end, 1 << 18):
            big.add_segment(seg)
        big.merge(into_one=True)
        rebuild_bm25(big, stack[0].tokenizer, passage_tokens=128, stride=64)
    return work / "big_idx"


def marked(folder: Path, want: dict) -> dict | None:
    """The build record of ``folder`` when its ``.done.json`` holds ``want`` (a finished build of that)."""
    done = folder.with_name(folder.name + ".done.json")
    if done.is_file() and (folder / "manifest.json").is_file():
        rec = json.loads(done.read_text())
        if rec.get("want") == want:
            return rec
    return None


def mark(folder: Path, want: dict, **info) -> dict:
    rec = {"want": want, **info}
    folder.with_name(folder.name + ".done.json").write_text(json.dumps(rec, indent=1))
    return rec


def template_records(work: Path, lengths: list[int]) -> dict[str, dict]:
    """The ``.done.json`` records (build time, peak RSS of that process) of the templates of ``lengths``."""
    recs = {
        f.name.removesuffix(".done.json"): json.loads(f.read_text()) for f in work.glob("tpl-*.done.json")
    }
    return {name: rec for name, rec in sorted(recs.items()) if rec["want"]["length"] in lengths}


def absorb_copy(big, tpl: Path, stage: Path) -> None:
    """Append a copy of the segments of the index ``tpl`` to ``big`` (``IndexWriter.absorb`` of a copy)."""
    shutil.rmtree(stage, ignore_errors=True)
    shutil.copytree(tpl, stage, ignore=shutil.ignore_patterns("index.lock", "leases"))
    with IndexWriter.open(stage) as other:
        big.absorb(other)
    shutil.rmtree(stage)


def rss_mib() -> dict[str, float]:
    """This process's RSS now, by kind (/proc/self/status, MiB)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(val.split()[0]) / 1024
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bm25_memory(view) -> dict[str, int]:
    """Bytes of a loaded BM25 index (``BM25View``): passage table, texts (if read), bm25s scores, vocabulary;
    ``mapped``: how many of them are memory-mapped arrays (resident only as far as questions page them in)."""
    index = view.index
    parts = {
        "passages": int(index.passages_P3.nbytes),
    }
    texts = index._texts  # not read when the index was loaded lazily (only on first use of .texts)
    if isinstance(texts, list):
        parts["texts"] = sys.getsizeof(texts) + sum(sys.getsizeof(t) for t in texts)
    bm = index.retriever
    if bm is not None:
        parts["scores"] = int(sum(v.nbytes for v in bm.scores.values() if hasattr(v, "nbytes")))
        vocab = bm.vocab_dict
        parts["vocab"] = sys.getsizeof(vocab) + sum(
            sys.getsizeof(k) + sys.getsizeof(v) for k, v in vocab.items()
        )
    parts["total"] = sum(parts.values())
    arrays = [index.passages_P3, *(bm.scores.values() if bm is not None else ())]
    parts["mapped"] = sum(int(a.nbytes) for a in arrays if _mapped(a))  # of the total: file-backed pages
    return parts


def _mapped(a: object) -> bool:
    """Whether array ``a`` is (a view of) a memory-mapped file."""
    while isinstance(a, np.ndarray):
        if isinstance(a, np.memmap):
            return True
        a = a.base
    return isinstance(a, mmap.mmap)


def warm_page_cache(folder: Path) -> int:
    """Read every file of the index once, so that timings see it in the OS page cache (as on a serving
    machine with RAM to spare) rather than whatever the disk holds; returns the bytes read. Our own caches
    (decoded chunks, offsets, BM25) stay empty."""
    total = 0
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            with f.open("rb") as fh:
                while block := fh.read(1 << 20):
                    total += len(block)
    return total


def ask(retriever: Retriever, question: str, mode: str) -> tuple[float, dict[str, int]]:
    """Seconds of one ``retrieve`` at a 2048-token budget, and what it read (``READ_KEYS``): decoded-chunk
    cache hits / misses, and the posting lists / postings / lists skipped / tiers of its S3 side."""
    chunks = retriever.store._chunks
    h, m = chunks.hits, chunks.misses
    retriever.last_read = {}
    t = time.perf_counter()
    retriever.retrieve(question, mode, 2048)
    sec = time.perf_counter() - t
    got = {"chunk_hits": chunks.hits - h, "chunk_misses": chunks.misses - m, **retriever.last_read}
    return sec, {k: int(got.get(k, 0)) for k in READ_KEYS}


def time_modes(
    retriever: Retriever, progress=None
) -> tuple[dict[str, list[float]], dict[str, dict[str, list[int]]]]:
    """Seconds per question of every mode, the modes rotated per question (question i asks them starting at
    mode i mod 3, so none always runs on a cache its predecessor warmed), after a warm-up question outside the
    timed set (it loads BM25, offsets, the prompt prefix); also, per mode and question, the decoded-chunk
    cache hits and misses and the posting lists / postings / lists skipped its S3 side read
    (``Retriever.last_read``). ``progress``: called after each question."""
    for mode in MODES:
        retriever.retrieve(WARMUP, mode, 2048)
    secs: dict[str, list[float]] = {m: [] for m in MODES}
    stats = {m: {k: [] for k in READ_KEYS} for m in MODES}
    for i, q in enumerate(QUESTIONS):
        for mode in MODES[i % 3 :] + MODES[: i % 3]:
            sec, got = ask(retriever, q, mode)
            secs[mode].append(sec)
            for k in READ_KEYS:
                stats[mode][k].append(got[k])
        if progress is not None:
            progress()
    return secs, stats


def stage_times(retriever: Retriever) -> dict[str, float]:
    """Median ms per stage of an s3 retrieval over QUESTIONS: the question's forward + SAE codes, reading
    postings and scoring the tokens they touch (``SparseScores``), span selection (``Retriever.s3_spans``)
    and reading the spans' text."""
    from s3attn.retrieval.question import head_features, question_token_range, score_tokens

    r, cfg = retriever, retriever.cfg
    parts: dict[str, list[float]] = {"forward_codes": [], "postings_score": [], "select_text": []}
    for q in QUESTIONS:
        prompt = r.prompt("", q)
        ids = torch.tensor(r.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        t0 = time.perf_counter()
        codes = r.encoder.codes(ids, question_token_range(r.tokenizer, prompt, q))
        t1 = time.perf_counter()
        scores = score_tokens(r.store, head_features(codes, r.store, cfg.question), cfg.question)
        t2 = time.perf_counter()
        r._materialise(r.s3_spans(scores, 2048))
        t3 = time.perf_counter()
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
            parts[key].append(dt)
    return {k: 1000 * statistics.median(v) for k, v in parts.items()}
