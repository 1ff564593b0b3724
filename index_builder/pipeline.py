"""``s3-index build``: resolve release and model, open the index, prefill new documents, rebuild BM25."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from s3attn.constants import BM25_DIR, BM25_STATE, INDEX_MANIFEST
from s3attn.corpus import Corpus, Document
from s3attn.errors import S3Error
from s3attn.index_builder.cluster import barrier, global_rank, share_plan, world_size
from s3attn.index_builder.config import BuildConfig
from s3attn.index_builder.indexer import IndexWriter
from s3attn.index_builder.meta import IndexAttrs
from s3attn.index_builder.reader import IndexPath, IndexReader, doc_ranges, open_index_group
from s3attn.models.precision import DTYPE_AUTO, accelerator_device, dtype_name, model_dtype, resolve_dtype
from s3attn.saes.stack import load_stack, model_name_for, resolve_release
from s3attn.storage import index_location, parse_storage_options, rmtree, storage_error, write_json

logger = logging.getLogger(__name__)


def index_attrs(
    stack,
    release: Path,
    rel_cfg: dict,
    layers: list[int],
    *,
    chunk: int,
    overlap: int,
    model: str | None = None,
) -> IndexAttrs:
    """Root attributes of an index built with ``stack`` = (loaded model, SAEs, geometry) from ``release``;
    its ``dtype`` is the precision the model was loaded in."""
    loaded, saes, geom = stack
    first = next(iter(saes.values()))
    return IndexAttrs(
        model_id=str(loaded.model_id),
        sae_release=str(rel_cfg.get("name", Path(release).name)),
        layers=tuple(int(x) for x in layers),
        num_kv_heads=int(geom.num_kv_heads),
        k=int(first.cfg.k),
        num_latents=int(first.cfg.num_latents),
        head_dim=int(geom.head_dim),
        chunk=int(chunk),
        overlap=int(overlap),
        sae_release_path=str(Path(release).resolve()),
        model=model or model_name_for(rel_cfg["model_id"]),
        dtype=dtype_name(model_dtype(loaded.model)),
    )


def out_location(cfg: BuildConfig) -> IndexPath:
    """``cfg.out`` as a folder or, for a URL, a Location with ``--storage-options`` (else the environment's)."""
    opts = parse_storage_options(cfg.storage_options) if cfg.storage_options else None
    return index_location(cfg.out, opts)


def existing_dtype(out: IndexPath) -> str | None:
    """The precision of the index already at ``out``, or None when there is none (or it is unreadable: the
    writer reports that)."""
    try:
        return open_index_group(out, write=False)[2].dtype  # the attributes only: no reader, no lease
    except S3Error:
        return None


def build_dtype(cfg: BuildConfig, stack=None) -> str:
    """The precision (a name) to build ``cfg.out`` in: ``--dtype``, where ``auto`` keeps the precision of an
    index already there, else that of ``stack`` (a loaded stack passed in), else resolves for the device the
    build runs on. Another precision than the existing index's or the stack's is a one-line S3Error."""
    name, have = cfg.stack.dtype, existing_dtype(out_location(cfg))
    resolve_dtype(name)  # a bad name first
    loaded_in = None if stack is None else dtype_name(model_dtype(stack[0].model))
    want = name
    if name == DTYPE_AUTO:
        want = have or loaded_in or dtype_name(resolve_dtype(name, accelerator_device(cfg.accelerator)))
    if have is not None and have != want:
        raise S3Error(
            f"--dtype {name}: {cfg.out} was built in {have}; add to it with --dtype {have} (or auto), "
            "or build a new index"
        )
    if loaded_in is not None and loaded_in != want:
        raise S3Error(f"--dtype {name}: the model passed in is loaded in {loaded_in}, the build needs {want}")
    return want


def rebuild_bm25(store: IndexReader, tokenizer, *, passage_tokens: int, stride: int) -> None:
    """Build the BM25 index of every document of ``store`` anew (``BM25_DIR``), and note what it covers."""
    from s3attn.index_builder.bm25_build import BM25Writer, make_passages

    ranges = doc_ranges(store)
    passages = make_passages(ranges, passage_tokens=passage_tokens, stride=stride)
    texts = tokenizer.batch_decode([store.tokens(p.start, p.end).tolist() for p in passages])
    BM25Writer.build(passages, texts).save(store.path / BM25_DIR)
    write_json(store.path / BM25_STATE, {"tokens": store.num_tokens, "passages": len(passages)})


def bm25_is_current(store: IndexReader) -> bool:
    try:
        state = json.loads((store.path / BM25_STATE).read_text())
    except (OSError, ValueError):
        return False
    return state.get("tokens") == store.num_tokens and (store.path / BM25_DIR).is_dir()


def build_index(corpus_path: str, cfg: BuildConfig, *, stack=None) -> IndexPath:
    """Index ``corpus_path`` into ``cfg.out``; ``stack`` = an already loaded ``load_stack`` result to reuse
    (its model and SAEs must be the ones ``cfg`` names), else the stack is loaded here."""
    if cfg.chunk < 1 or not 0 <= cfg.overlap < cfg.chunk:  # the context comes from the previous chunk
        raise S3Error(
            f"--chunk {cfg.chunk} / --overlap {cfg.overlap}: need chunk >= 1 and 0 <= overlap < chunk"
        )
    corpus = Corpus(corpus_path, text_field=cfg.text_field, skip_bad=cfg.skip_bad_files, option="corpus")
    try:  # list (and UTF-8 check) every document before anything is loaded or written
        files = corpus.files()
        if not files:
            raise S3Error(
                f"corpus {corpus_path}: no .txt/.md/.jsonl/.parquet files found; put documents in it"
            )
        all_docs = list(corpus)
    except OSError as err:  # a broken link, a file without read permission, ...
        raise S3Error(
            f"{err.filename or corpus_path}: cannot be read ({err.strerror or err}); "
            "fix it or move it out of the corpus"
        ) from None
    release, rel_cfg, layers = resolve_release(cfg.stack.sae, cfg.stack.layers)
    dtype = build_dtype(cfg, stack)
    if stack is None:
        stack = load_stack(release, rel_cfg, layers, cfg.stack.model, dtype=resolve_dtype(dtype))
    loaded, saes, geom = stack
    if sorted(saes) != layers:
        raise S3Error(f"the loaded SAEs have layers {sorted(saes)}, the build asks for {layers}; load those")
    attrs = index_attrs(
        stack, release, rel_cfg, layers, chunk=cfg.chunk, overlap=cfg.overlap, model=cfg.stack.model
    )
    out = out_location(cfg)
    logger.info("s3-index: building into %s", out)
    try:
        _write_index(out, attrs, all_docs, cfg, loaded, saes)
    except OSError as err:  # disk full, permissions, ...: every published segment is still sound
        raise S3Error(
            f"failed writing {out}: {err.strerror or err}; free space or fix permissions, "
            "then rerun with --resume"
        ) from None
    except Exception as err:  # an object store's client error (no credentials, endpoint down, ...)
        bad = storage_error(err)
        if bad is None:
            raise
        raise bad from None
    return out


STAGING_DIR = ".staging"  # per-rank staging indexes of a multi-device build, absorbed by rank 0


def _rank(cfg: BuildConfig) -> int:
    """This process's global rank (Lightning's launcher or a cluster launcher names it, see ``cluster``)."""
    return global_rank(cfg.num_nodes, cfg.devices)


def _world(cfg: BuildConfig) -> int:
    return world_size(cfg.num_nodes, cfg.devices)


def _prefill(store: IndexWriter, docs: list[Document], cfg: BuildConfig, loaded, saes) -> None:
    from s3attn.index_builder.build import run_prefill

    run_prefill(
        loaded.model,
        saes,
        loaded.tokenizer,
        docs,
        store,
        chunk=cfg.chunk,
        overlap=cfg.overlap,
        segment_tokens=cfg.segment_tokens,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        progress=cfg.progress and _rank(cfg) == 0,
    )


def _staged_prefill(
    out: IndexPath, attrs: IndexAttrs, docs: list[Document], cfg: BuildConfig, loaded, saes
) -> list[IndexWriter]:
    """Several ranks: every rank writes its own segments into ``out/.staging/rank-<r>`` (r = global rank,
    documents dealt round-robin over all ranks of all nodes); returns the staging indexes of all ranks on
    rank 0 (after all ranks finished), else []."""
    staging = out / STAGING_DIR
    mine = staging / f"rank-{_rank(cfg)}"
    rmtree(mine)
    with IndexWriter.create(mine, attrs) as store:
        _prefill(store, docs, cfg, loaded, saes)  # ends with a barrier: every rank's segments are written
    barrier()  # and every rank has let go of its staging index's writer lock
    if _rank(cfg) != 0:
        return []
    return [
        IndexWriter.open(staging / f"rank-{r}")
        for r in range(_world(cfg))
        if (staging / f"rank-{r}" / INDEX_MANIFEST).is_file()
    ]


def _worker(out: IndexPath, attrs: IndexAttrs, all_docs: list[Document], cfg: BuildConfig, loaded, saes):
    """A rank other than 0: index its share of the documents the index lacks into its staging index."""
    if cfg.num_nodes > 1:  # started with rank 0 by a cluster launcher: rank 0 names the documents
        docs = [all_docs[i] for i in share_plan(None, _rank(cfg), _world(cfg))]
    else:  # started by Lightning once rank 0 has opened the index: read which ones it lacks
        with IndexReader.open(out) as main:
            docs = [d for d in all_docs if not main.has_document(d.path, d.content_hash)]
    if docs:
        _staged_prefill(out, attrs, docs, cfg, loaded, saes)


def _todo(store: IndexWriter, all_docs: list[Document], cfg: BuildConfig) -> list[int]:
    """Indexes of the documents ``store`` lacks, after dropping the open tail of a killed build (--resume)."""
    if store.has_open_tail():
        if not cfg.resume:
            raise S3Error(
                f"{store.path}: an earlier build was interrupted; run the same command with --resume"
            )
        store.drop_open_tail()
    return [i for i, d in enumerate(all_docs) if not store.has_document(d.path, d.content_hash)]


def _merge_after_build(store: IndexWriter, cfg: BuildConfig) -> None:
    """``--merge-all``: every segment into one; else tiered merges of ``--merge-tier`` (0 or 1: none)."""
    if cfg.merge_all:
        store.merge(into_one=True, progress=cfg.progress)
    elif cfg.merge_tier > 1:
        store.merge(cfg.merge_tier)


def _write_index(
    out: IndexPath, attrs: IndexAttrs, all_docs: list[Document], cfg: BuildConfig, loaded, saes
) -> None:
    """Open or create the index at ``out``, index the documents it lacks, merge, refresh BM25."""
    if _world(cfg) > 1 and _rank(cfg) > 0:  # a worker rank: its own staging store
        _worker(out, attrs, all_docs, cfg, loaded, saes)
        return
    shared = cfg.num_nodes <= 1  # several nodes: the other ranks wait for rank 0's plan
    try:
        with IndexWriter.create(out, attrs) as store:
            todo = _todo(store, all_docs, cfg)
            if not shared:
                shared = True
                share_plan(todo, 0, _world(cfg))
            docs = [all_docs[i] for i in todo]
            if docs and _world(cfg) > 1:
                for staged in _staged_prefill(out, attrs, docs, cfg, loaded, saes):
                    with staged:
                        store.absorb(staged)
                rmtree(out / STAGING_DIR)
            elif docs:
                _prefill(store, docs, cfg, loaded, saes)
            _merge_after_build(store, cfg)
            if not bm25_is_current(store):
                rebuild_bm25(
                    store, loaded.tokenizer, passage_tokens=cfg.passage_tokens, stride=cfg.passage_stride
                )
            if not docs:
                logger.info("s3-index: every document is already indexed; nothing to add")
    finally:
        if not shared:  # rank 0 failed before its plan: let the other ranks go
            share_plan([], 0, _world(cfg))
