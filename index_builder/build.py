"""Codes -> segments: the streaming build as Lightning ``predict`` with a prediction-writer callback.

The dataset yields prefill chunks of this rank's documents (documents are dealt to ranks round-robin);
``PrefillModule.predict_step`` turns a chunk into codes; ``SegmentWriter`` gathers codes in RAM and
publishes an immutable segment whenever ``segment_tokens`` are reached at a document end. A document
larger than that is written as several pieces, the last one closing it, so memory stays bounded by
the segment size whatever the corpus or document size.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from s3attn.corpus import Document
from s3attn.index_builder.indexer import IndexWriter
from s3attn.index_builder.prefill import ChunkCodes, encode_chunk, iter_doc_chunks
from s3attn.index_builder.schema import DocRecord, SegmentData


class ChunkStream(IterableDataset):
    """Prefill chunks of the documents dealt to one rank: dicts with the chunk and whether it ends its doc."""

    def __init__(
        self, docs: list[Document], tokenizer, *, chunk: int, overlap: int, rank: int = 0, world: int = 1
    ):
        self.docs, self.tokenizer = docs, tokenizer
        self.chunk, self.overlap, self.rank, self.world = chunk, overlap, rank, world

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for doc_idx in range(self.rank, len(self.docs), self.world):
            chunks = iter_doc_chunks(
                doc_idx, self.docs[doc_idx].token_blocks(self.tokenizer), self.chunk, self.overlap
            )
            prev = next(chunks, None)
            while prev is not None:
                nxt = next(chunks, None)
                yield {"chunk": prev, "last": nxt is None}
                prev = nxt


def _collate(item: dict[str, Any]) -> dict[str, Any]:
    return item


class PrefillModule(L.LightningModule):
    """Frozen LM + SAEs; ``predict_step`` = one chunk -> codes. Nothing here trains."""

    def __init__(self, model, saes: dict[int, torch.nn.Module]):
        super().__init__()
        object.__setattr__(self, "_lm", model)
        self.saes = torch.nn.ModuleDict({str(k): v for k, v in saes.items()})

    def on_predict_start(self) -> None:
        self._lm.to(self.device)

    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0) -> tuple[ChunkCodes, bool]:
        saes = {int(k): v for k, v in self.saes.items()}
        return encode_chunk(self._lm, saes, batch["chunk"]), bool(batch["last"])


class SegmentAccumulator:
    """Gathers chunk codes in RAM and publishes segments to ``store`` (one writer).

    A segment is published at a document end once ``segment_tokens`` are gathered. When one document
    alone overflows it, the documents closed before it are published first, then the open document in
    pieces flagged ``open_doc`` (a crash leaves an open tail that ``--resume`` drops and redoes).
    """

    def __init__(self, store: IndexWriter, docs: list[Document], *, segment_tokens: int):
        self.store, self.docs, self.segment_tokens = store, docs, segment_tokens
        self.heads = store.heads
        self.token_ids: list[np.ndarray] = []
        self.codes: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {h: [] for h in self.heads}
        self.records: list[DocRecord] = []
        self.n = 0  # tokens held
        self.closed_n = 0  # of which belong to closed documents
        # the next document id (a document written in pieces has several records with one id)
        self.doc_id = max((d.doc_id for d in store.documents()), default=-1) + 1
        self.piece_start: int | None = None  # global start of the open document's current piece

    def add(self, cc: ChunkCodes, last: bool) -> None:
        if self.piece_start is None:
            self.piece_start = self.store.num_tokens + self.n
        self.token_ids.append(cc.token_ids)
        for head in self.heads:
            self.codes[head].append(cc.codes[head])
        self.n += cc.num_tokens
        if last:
            self._close_piece(cc.doc_idx)
            self.doc_id += 1
            self.closed_n = self.n
            if self.n >= self.segment_tokens:
                self.flush()
        elif self.n >= self.segment_tokens:  # a huge document
            if self.closed_n:
                self._publish(self.closed_n, open_doc=False)
            if self.n >= self.segment_tokens:
                self._close_piece(cc.doc_idx)
                self._publish(self.n, open_doc=True)

    def _close_piece(self, doc_idx: int) -> None:
        doc = self.docs[doc_idx]
        end = self.store.num_tokens + self.n
        self.records.append(
            DocRecord(self.doc_id, doc.path, doc.content_hash, self.piece_start, end - self.piece_start)
        )
        self.piece_start = None

    def _publish(self, n: int, *, open_doc: bool) -> str:
        """Publish the first ``n`` held tokens (and the records inside them); keep the rest."""
        toks = np.concatenate(self.token_ids)
        codes = {
            h: (np.concatenate([c[0] for c in p]), np.concatenate([c[1] for c in p]))
            for h, p in self.codes.items()
        }
        start = self.store.num_tokens
        records = [r for r in self.records if r.token_start < start + n]
        self.records = self.records[len(records) :]
        data = SegmentData(toks[:n], records, start, {h: (i[:n], a[:n]) for h, (i, a) in codes.items()})
        name = self.store.add_segment(data, open_doc=open_doc)
        self.token_ids = [toks[n:]] if n < toks.size else []
        self.codes = {h: ([(i[n:], a[n:])] if n < toks.size else []) for h, (i, a) in codes.items()}
        self.n -= n
        self.closed_n = max(0, self.closed_n - n)
        return name

    def flush(self) -> str | None:
        """Publish everything held (only at a document end)."""
        return self._publish(self.n, open_doc=False) if self.n else None


class SegmentWriter(BasePredictionWriter):
    """Prediction writer: every predicted chunk goes to the accumulator; a token progress bar."""

    def __init__(self, accumulator: SegmentAccumulator, *, total_tokens: int | None, progress: bool = True):
        super().__init__(write_interval="batch")
        self.acc = accumulator
        self.bar = tqdm(
            total=total_tokens,
            unit="tok",
            unit_scale=True,
            desc="indexing",
            disable=not progress,
            dynamic_ncols=True,
        )

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ):
        cc, last = prediction
        self.acc.add(cc, last)
        self.bar.update(cc.num_tokens)

    def on_predict_end(self, trainer, pl_module) -> None:
        self.acc.flush()
        self.bar.total = self.bar.n  # the total was estimated from file sizes (bytes / 4)
        self.bar.refresh()
        self.bar.close()


def run_prefill(
    model,
    saes: dict[int, torch.nn.Module],
    tokenizer,
    docs: list[Document],
    store: IndexWriter,
    *,
    chunk: int,
    overlap: int,
    segment_tokens: int,
    accelerator: str = "auto",
    devices: int = 1,
    num_nodes: int = 1,
    progress: bool = True,
) -> None:
    """Index ``docs`` into ``store`` (documents already there must have been filtered out by the caller).
    With several ranks (``num_nodes`` x ``devices``), this rank indexes its round-robin share of ``docs``."""
    if not docs:
        return
    for name in ("lightning.pytorch", "lightning.fabric"):  # "GPU available: ..." and tips: not for this CLI
        logging.getLogger(name).setLevel(logging.WARNING)
    total = sum(_estimate_tokens(d) for d in docs)
    acc = SegmentAccumulator(store, docs, segment_tokens=segment_tokens)
    writer = SegmentWriter(acc, total_tokens=total, progress=progress)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[writer],
    )
    loader = DataLoader(
        ChunkStream(
            docs, tokenizer, chunk=chunk, overlap=overlap, rank=trainer.global_rank, world=trainer.world_size
        ),
        batch_size=None,
        collate_fn=_collate,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*infer the batch indices.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer.predict(PrefillModule(model, saes), dataloaders=loader, return_predictions=False)
    if trainer.world_size > 1:  # rank 0 absorbs every rank's segments only once all are written
        trainer.strategy.barrier("s3attn-index-staged")


def _estimate_tokens(doc: Document) -> int:
    size = len(doc.text) if doc.text is not None else doc.file.stat().st_size
    return max(1, size // 4)
