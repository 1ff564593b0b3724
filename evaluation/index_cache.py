"""A sample's index: built quietly with the run's shared model stack, and kept between ``s3-eval`` runs with
``--index-cache DIR``, so that a run that changes only retrieval or generation settings skips the index
builds (at 64k tokens, ~100 s of a sample's ~120 s here).

An entry is ``DIR/<key>/`` holding ``index/`` and ``build.json`` (what the key was made of, and how long the
first build took). The key is a SHA-256 of the sample's context text and of everything the build depends on:
the build options, the model and its precision (named when not float32, so float32 builds keep the keys they
had before precision was a choice), the SAE release's ``config.json`` and the size and mtime of its weight
files (a retrained release at the same path gets new keys). An entry is built under ``DIR/.tmp-<uuid>`` and renamed
to its key when complete, so an interrupted build leaves no entry behind; a later run removes such leftovers
once they are an hour old.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from s3attn.constants import QUERY_MAP_FILE
from s3attn.evaluation.runtime import quiet_logs
from s3attn.paths import atomic_write_json

BUILD_JSON = "build.json"
INDEX_DIR = "index"
STALE_SECONDS = 3600


class CachedIndex(NamedTuple):
    index: Path
    build_seconds: float  # of the build that made the entry


def release_fingerprint(release: Path) -> dict:
    """The release's path and the (name, size, mtime) of every file in it: changes when it is rewritten. A
    query map (``QUERY_MAP_FILE``) is left out: it changes questions, not the indexes."""
    files = sorted(p for p in Path(release).rglob("*") if p.is_file() and p.name != QUERY_MAP_FILE)
    return {
        "path": str(Path(release).resolve()),
        "files": [[str(p.relative_to(release)), p.stat().st_size, p.stat().st_mtime_ns] for p in files],
    }


def index_identity(stack, cfg: Any, release: Path) -> dict:
    """What a sample's index depends on besides its text: ``stack`` = (loaded model, SAEs by layer, ...),
    ``cfg`` an EvalConfig (its model and chunk), ``release`` the SAE release folder."""
    from s3attn.constants import INDEX_FORMAT_VERSION
    from s3attn.models.precision import dtype_name, model_dtype

    identity = {
        "build": {"model": cfg.stack.model, "layers": sorted(stack[1]), "chunk": cfg.chunk},
        "model_id": stack[0].model_id,
        "release": release_fingerprint(release),
        "format_version": INDEX_FORMAT_VERSION,
    }
    dtype = dtype_name(model_dtype(stack[0].model))
    if dtype != "float32":  # an index built in bf16 is not the fp32 one; fp32 keys stay those of before
        identity["dtype"] = dtype
    return identity


def cache_key(context: str, identity: dict) -> str:
    h = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    h.update(context.encode("utf-8"))
    return h.hexdigest()[:32]


def lookup(cache: Path, key: str) -> CachedIndex | None:
    entry = cache / key
    try:
        meta = json.loads((entry / BUILD_JSON).read_text())
    except (OSError, ValueError):
        return None
    return CachedIndex(entry / INDEX_DIR, float(meta["build_seconds"]))


def staging(cache: Path) -> Path:
    """A fresh ``DIR/.tmp-<uuid>`` to build an entry in; leftovers of killed runs (over an hour old, so not
    a build another run is doing now) are removed first."""
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
    tmp = cache / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    return tmp


def publish(cache: Path, key: str, tmp: Path, identity: dict, build_seconds: float) -> CachedIndex:
    """Record the build in ``tmp`` and rename it to its key (another run that got there first wins)."""
    atomic_write_json(tmp / BUILD_JSON, {"identity": identity, "build_seconds": build_seconds})
    try:
        tmp.rename(cache / key)
    except OSError:  # the key exists already: keep that one
        shutil.rmtree(tmp, ignore_errors=True)
    return CachedIndex(cache / key / INDEX_DIR, build_seconds)


def get_or_build(
    cache: Path | None, context: str, identity: dict, workdir: Path, build: Callable[[Path], None]
) -> CachedIndex:
    """The index of ``context``: reused from ``cache``, or made by ``build(index folder)`` (timed), in
    ``workdir`` without a cache, else in a staging folder then published under its key."""
    if cache is None:
        t0 = time.perf_counter()
        build(workdir / INDEX_DIR)
        return CachedIndex(workdir / INDEX_DIR, time.perf_counter() - t0)
    key = cache_key(context, identity)
    hit = lookup(cache, key)
    if hit is not None:
        return hit
    staged = staging(cache)
    t0 = time.perf_counter()
    build(staged / INDEX_DIR)
    return publish(cache, key, staged, identity, time.perf_counter() - t0)


def sample_index(task: str, context: str, stack, cfg: Any, workdir: Path, identity: dict) -> CachedIndex:
    """The index of one sample's ``context`` (a document named after ``task``), built quietly with
    ``stack`` = (loaded model, SAEs, ...) and ``cfg`` (an EvalConfig: its stack options, chunk and
    index_cache), or reused from ``cfg.index_cache`` under a key that also covers ``identity``."""
    from s3attn.index_builder.config import BuildConfig
    from s3attn.index_builder.pipeline import build_index

    corpus = workdir / "corpus"

    def build(out: Path) -> None:
        corpus.mkdir(parents=True)
        (corpus / f"{task}.txt").write_text(context, encoding="utf-8")
        device = stack[0].model.device.type  # build where the shared model lives (questions run there)
        build_cfg = BuildConfig(out=str(out), stack=replace(cfg.stack), chunk=cfg.chunk,
                                accelerator="gpu" if device == "cuda" else "cpu", progress=False)  # fmt: skip
        with quiet_logs():
            build_index(str(corpus), build_cfg, stack=stack)

    cache = Path(cfg.index_cache) if cfg.index_cache else None
    return get_or_build(cache, context, identity, workdir, build)
