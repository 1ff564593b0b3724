"""Readers survive writers: one writer process appends documents and merges in a loop while reader processes ask
questions in a loop, all on one index, for ``--seconds``.

    python bench/stress_index.py [--seconds 60] [--readers 3] [--out docs/results/stress-index.json]

The model and SAEs are the tiny random ones of tests/conftest.py (a 4-layer Llama, hidden 64, SAEs of 64
latents, k 4), its word-level tokenizer extended with made-up words ``uniqNNNN``: every appended document holds
one, found by no other document. The writer runs ``build_index`` (the Python API of ``s3-index build``:
segments, then BM25 rebuilt) on a folder of one new document, and every 3rd append a tiered merge (every 8th:
everything into one segment). Each reader (a ``Retriever``, retrieve only, no generation) asks questions in
the s3, bm25 and hybrid modes, calling ``refresh()`` before about half of them, and checks every answer against
the one generation its index reader holds: each span lies inside a document of that generation. When the
writer has stopped, each reader refreshes and asks for every appended document's made-up word (bm25 mode):
every answer must come from that document. Counts: questions, appends, merges, generations seen, errors.
Exit status 1 on any error. The JSON goes to ``--out`` (and stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = (1, 3)
UNIQUE_WORDS = 900  # made-up words in the tokenizer: at most this many appends
VOCAB = 1024
MODES = ("s3", "bm25", "hybrid")
BUDGET = 96
TAG = "@@"  # protocol lines between the processes (anything else on stdout is ignored)


def unique_word(i: int) -> str:
    return f"uniq{i:04d}"


# ---- the tiny world (model dir, SAE release, first index) ---------------------------------------------------
def _common_words() -> list[str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import TINY_WORDS

    return list(TINY_WORDS)


def _words(rng: random.Random, n: int) -> str:
    common = _common_words()
    return " ".join(rng.choice(common) for _ in range(n))


def make_model_dir(folder: Path) -> Path:
    """tests/conftest.py's tiny Llama with a larger vocabulary, and its word-level tokenizer + made-up words."""
    import torch
    import transformers as tf
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import tiny_config

    config = tiny_config("llama")
    config.vocab_size = VOCAB
    torch.manual_seed(0)
    tf.LlamaForCausalLM(config).eval().save_pretrained(folder)
    specials = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
    words = [*specials, *_common_words(), *(unique_word(i) for i in range(UNIQUE_WORDS))]
    backend = Tokenizer(WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    tok = tf.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]"
    )
    tok.save_pretrained(folder)
    return folder


def make_release(folder: Path, model_dir: Path) -> Path:
    import torch

    from s3attn.models.loading import load_model
    from s3attn.saes import SaeConfig, SaeMeta, TopKSAE, write_release

    model_id = load_model(str(model_dir)).model_id
    torch.manual_seed(0)
    saes = {layer: TopKSAE(SaeConfig(d_in=16, num_latents=64, k=4)) for layer in LAYERS}
    metas = {
        layer: SaeMeta(model_id=model_id, layer=layer, sites=("k", "q"), head_dim=16) for layer in LAYERS
    }
    info = {"model_id": model_id, "dataset": "random", "dataset_license": "n/a", "context_length": 64}
    return write_release(folder, saes, metas, info)


def build_config(work: Path):
    from s3attn.config import StackOptions
    from s3attn.index_builder.config import BuildConfig

    stack = StackOptions(sae=str(work / "release"), model=str(work / "model"), dtype="float32")
    return BuildConfig(
        out=str(work / "index"),
        stack=stack,
        chunk=64,
        overlap=8,
        segment_tokens=128,
        merge_tier=0,
        passage_tokens=32,
        passage_stride=16,
        accelerator="cpu",
        progress=False,
    )


def make_world(work: Path) -> None:
    from s3attn.index_builder.pipeline import build_index

    make_model_dir(work / "model")
    make_release(work / "release", work / "model")
    corpus = work / "corpus"
    corpus.mkdir()
    rng = random.Random(0)
    for i in range(3):
        (corpus / f"start-{i}.txt").write_text(_words(rng, 150) + "\n")
    build_index(str(corpus), build_config(work))


# ---- the processes --------------------------------------------------------------------------------------
def _say(kind: str, obj: object = None) -> None:
    print(f"{TAG}{kind} {json.dumps(obj)}", flush=True)


def _wait_for(kind: str) -> object:
    for line in sys.stdin:
        if line.startswith(f"{TAG}{kind} "):
            return json.loads(line[len(TAG) + len(kind) + 1 :])
    raise SystemExit(f"stdin closed before {kind}")


def _append(work: Path, cfg, stack, rng: random.Random, i: int) -> list[str]:
    """Index one new document holding the made-up word ``unique_word(i)``; returns [its path, the word]."""
    from s3attn.index_builder.pipeline import build_index

    folder = work / "appends" / f"{i:05d}"
    folder.mkdir(parents=True)
    name = f"doc-{i:05d}.txt"
    words = _words(rng, rng.randint(20, 60)).split()
    words.insert(rng.randrange(len(words) + 1), unique_word(i))
    (folder / name).write_text(" ".join(words) + "\n")
    build_index(str(folder), cfg, stack=stack)
    return [name, unique_word(i)]


def run_writer(work: Path, seed: int) -> dict:
    import torch

    from s3attn.index_builder.indexer import IndexWriter
    from s3attn.saes.checkpoint import read_release_config
    from s3attn.saes.stack import load_stack

    torch.set_num_threads(1)
    cfg = build_config(work)
    release = work / "release"
    stack = load_stack(release, read_release_config(release), list(LAYERS), str(work / "model"))
    rng = random.Random(seed)
    appended = [_append(work, cfg, stack, rng, 0)]  # the first one warms up (Lightning, first forward)
    merges = merged_away = max_pending = 0
    _say("ready")
    deadline = _wait_for("go")
    t0 = time.time()
    while time.time() < deadline and len(appended) < UNIQUE_WORDS:
        appended.append(_append(work, cfg, stack, rng, len(appended)))
        if len(appended) % 3 == 0:
            with IndexWriter.open(cfg.out) as w:
                merged_away += w.merge(2, into_one=len(appended) % 8 == 0)
                merges += 1
                max_pending = max(max_pending, len(w.last_gc.pending) if w.last_gc else 0)
    return {
        "appends": len(appended),
        "appended": appended,
        "seconds_per_append": round((time.time() - t0) / max(1, len(appended) - 1), 2),
        "merges": merges,
        "segments_merged_away": merged_away,
        "max_pending_segments": max_pending,
    }


def _last_error() -> str:
    """The exception being handled, in one line (where it was raised, type, message)."""
    frame = traceback.extract_tb(sys.exc_info()[2])[-1]
    return f"{Path(frame.filename).name}:{frame.lineno}: {traceback.format_exc().strip().splitlines()[-1]}"


def _check_answer(retriever, spans) -> str | None:
    """None when every span starts inside a document of the generation the retriever's index reader holds
    (same doc id and path) and ends inside that generation's tokens. (A hybrid span may run on into the next
    document, as bias and fused spans do; that is the retriever's rule, not a matter of generations.)"""
    store = retriever.store
    docs = {}
    for d in store.documents():  # pieces of one document: contiguous
        lo, hi, _ = docs.get(d.doc_id, (d.token_start, 0, d.path))
        docs[d.doc_id] = (lo, max(hi, d.token_start + d.num_tokens), d.path)
    for s in spans:
        lo, hi, path = docs.get(s.doc_id, (0, 0, None))
        if path != s.document or not lo <= s.start < hi or not s.start < s.end <= store.num_tokens:
            return f"span {s.doc_id}:{s.start}-{s.end} ({s.document}) is in no document of generation {store.generation}"
    return None


def _question(rng: random.Random, retriever) -> str:
    known = [d.path for d in retriever.store.documents() if d.path.startswith("doc-")]
    if known and rng.random() < 0.5:
        return f"where is {unique_word(int(rng.choice(known)[4:9]))}"
    return _words(rng, rng.randint(2, 5))


def run_reader(work: Path, seed: int) -> dict:
    import torch

    from s3attn.retrieval.retriever import Retriever

    torch.set_num_threads(1)
    rng = random.Random(seed)
    retriever = Retriever(work / "index")
    questions, refreshes, moved, errors, generations = 0, 0, 0, [], set()
    _say("ready")
    deadline = _wait_for("go")
    while time.time() < deadline:
        try:
            if rng.random() < 0.5:
                refreshes += 1
                moved += retriever.refresh()
            generations.add(retriever.store.generation)
            spans = retriever.retrieve(_question(rng, retriever), rng.choice(MODES), BUDGET)
            questions += 1
            bad = _check_answer(retriever, spans)
            if bad:
                errors.append(bad)
        except Exception:
            errors.append(_last_error())
    appended = _wait_for("final")
    found, missing = _final_check(retriever, appended, errors)
    retriever.store.close()
    return {
        "questions": questions,
        "refreshes": refreshes,
        "moved": moved,
        "generations": sorted(generations),
        "errors": errors,
        "found": found,
        "missing": missing,
    }


def _final_check(retriever, appended: list[list[str]], errors: list[str]) -> tuple[int, list[str]]:
    """After the writer stopped: refresh, then every appended document's made-up word finds that document."""
    retriever.refresh()
    found, missing = 0, []
    for name, word in appended:
        try:
            spans = retriever.retrieve(f"where is {word}", "bm25", BUDGET)
        except Exception:
            errors.append(_last_error())
            continue
        if spans and all(s.document == name for s in spans):
            found += 1
        else:
            missing.append(name)
    return found, missing


# ---- the conductor ----------------------------------------------------------------------------------------
def _start(role: str, work: Path, seed: int, logs: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--role",
        role,
        "--work",
        str(work),
        "--seed",
        str(seed),
    ]
    err = open(logs / f"{role}-{seed}.log", "w")  # noqa: SIM115 (closed with the process)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env
    )


def _read(proc: subprocess.Popen, kind: str) -> object:
    for line in proc.stdout:
        if line.startswith(f"{TAG}{kind} "):
            return json.loads(line[len(TAG) + len(kind) + 1 :])
    raise RuntimeError(f"process {proc.args[3]} ended before {kind!r} (exit {proc.wait()}); see its log")


def _send(proc: subprocess.Popen, kind: str, obj: object) -> None:
    proc.stdin.write(f"{TAG}{kind} {json.dumps(obj)}\n")
    proc.stdin.flush()


def conduct(work: Path, seconds: float, readers: int) -> dict:
    """Build the world in ``work``, run the writer and ``readers`` readers for ``seconds``, collect figures."""
    from s3attn.index_builder.indexer import IndexWriter
    from s3attn.index_builder.reader import IndexReader

    t0 = time.time()
    make_world(work)
    with IndexReader.open(work / "index") as r:
        first_generation = r.generation
    logs = work / "logs"
    logs.mkdir()
    procs = [_start("writer", work, 0, logs)] + [_start("reader", work, i + 1, logs) for i in range(readers)]
    for p in procs:
        _read(p, "ready")
    setup = time.time() - t0
    for p in procs:
        _send(p, "go", time.time() + seconds)
    writer = _read(procs[0], "result")
    for p in procs[1:]:
        _send(p, "final", writer["appended"])
    results = [_read(p, "result") for p in procs[1:]]
    for p in procs:
        p.wait(timeout=120)
    with IndexWriter.open(work / "index") as w:  # every reader closed: nothing is pending any more
        gc, segments, last_generation = w.last_gc, [s.name for s in w.segments], w.generation
    on_disk = sorted(p.name for p in (work / "index" / "index.zarr" / "segments").iterdir() if p.is_dir())
    errors = [e for r in results for e in r["errors"]]
    if on_disk != sorted(segments):
        errors.append(f"segment folders {on_disk} != manifest {sorted(segments)} after the final gc")
    if (work / "index" / "leases").exists():
        errors.append("lease files left after every reader closed")
    missing = sorted({m for r in results for m in r["missing"]})
    errors += [f"appended document {m} not found after refresh" for m in missing]
    return {
        "command": f"python bench/stress_index.py --seconds {seconds:g} --readers {readers}",
        "seconds": seconds,
        "setup_seconds": round(setup, 1),
        "readers": readers,
        "questions": sum(r["questions"] for r in results),
        "questions_per_reader": [r["questions"] for r in results],
        "refreshes": sum(r["refreshes"] for r in results),
        "refreshes_that_moved": sum(r["moved"] for r in results),
        "appends": writer["appends"],
        "writer_seconds_per_append_and_merge": writer["seconds_per_append"],
        "merges": writer["merges"],
        "segments_merged_away": writer["segments_merged_away"],
        "generations_written": last_generation - first_generation,
        "generations_seen": len({g for r in results for g in r["generations"]}),
        "generations_seen_per_reader": [len(r["generations"]) for r in results],
        "max_segments_kept_for_readers": writer["max_pending_segments"],
        "final_found": [r["found"] for r in results],
        "final_segments": len(segments),
        "final_gc_deleted": len(gc.deleted),
        "errors": len(errors),
        "error_samples": errors[:5],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the writer and readers run")
    ap.add_argument("--readers", type=int, default=3, help="reader processes")
    ap.add_argument("--out", help="write the JSON figures here")
    ap.add_argument("--work", help="working folder (default: a temp folder, removed afterwards)")
    ap.add_argument("--role", choices=("writer", "reader"), help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role:
        run = run_writer if args.role == "writer" else run_reader
        _say("result", run(Path(args.work), args.seed))
        return 0
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="s3attn-stress-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        figures = conduct(work, args.seconds, args.readers)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 1 if figures["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
