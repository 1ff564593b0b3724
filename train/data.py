"""Text -> tokens -> fixed-length contexts, as a LightningDataModule (or cached head vectors, see ``cache``).

Every rank reads the corpus in the same seeded document order and keeps every ``world``-th context, so DDP
ranks see disjoint data and the same number of batches. Every ``holdout_every``-th context is held out.
The stream cycles the corpus until the token budget is met, and can skip the contexts a resumed run has
already consumed (exact resume).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from s3attn.corpus import Corpus, Document
from s3attn.errors import S3Error


class ContextStream(IterableDataset):
    """Yields ``input_ids`` LongTensors of ``context_length`` tokens for one rank and one split."""

    def __init__(
        self,
        docs: list[Document],
        tokenizer,
        *,
        context_length: int,
        holdout_every: int,
        split: str,
        limit: int,
        rank: int = 0,
        world: int = 1,
        skip: int = 0,
        seed: int = 0,
    ):
        self.docs, self.tokenizer = docs, tokenizer
        self.context_length, self.holdout_every = context_length, holdout_every
        self.split, self.limit, self.rank, self.world, self.skip, self.seed = (
            split,
            limit,
            rank,
            world,
            skip,
            seed,
        )

    def __len__(self) -> int:
        return max(0, self.limit - self.skip)

    def _contexts(self) -> Iterator[list[int]]:
        eos = self.tokenizer.eos_token_id
        epoch = 0
        while True:
            order = list(range(len(self.docs)))
            random.Random(self.seed + epoch).shuffle(order)
            buf: list[int] = []
            produced = False
            for i in order:
                for ids in self.docs[i].token_blocks(self.tokenizer):
                    buf.extend(ids)
                    while len(buf) >= self.context_length:
                        produced = True
                        yield buf[: self.context_length]
                        del buf[: self.context_length]
                if eos is not None:
                    buf.append(eos)
            if not produced:
                raise S3Error(f"the corpus holds fewer than --context-length {self.context_length} tokens")
            epoch += 1

    def __iter__(self) -> Iterator[torch.Tensor]:
        kept = 0
        mine = 0
        for idx, ctx in enumerate(self._contexts()):
            held = (idx % self.holdout_every) == self.holdout_every - 1
            if held != (self.split == "holdout"):
                continue
            if (kept % self.world) == self.rank:
                if mine >= self.skip:
                    yield torch.tensor(ctx, dtype=torch.long)
                mine += 1
                if mine >= self.limit:
                    return
            kept += 1


class CorpusDataModule(L.LightningDataModule):
    """Streams ``limit`` training contexts per rank, in batches of ``batch_size``."""

    def __init__(
        self,
        corpus: Corpus,
        tokenizer,
        *,
        context_length: int,
        batch_size: int,
        contexts_per_rank: int,
        holdout_every: int,
        holdout_contexts: int,
        seed: int = 0,
        docs: list[Document] | None = None,
    ):
        super().__init__()
        self.corpus, self.tokenizer = corpus, tokenizer
        self.context_length, self.batch_size = context_length, batch_size
        self.contexts_per_rank, self.holdout_every, self.holdout_contexts = (
            contexts_per_rank,
            holdout_every,
            holdout_contexts,
        )
        self.seed = seed
        self.skip_contexts = 0  # set by the module on resume
        self._docs: list[Document] | None = docs

    def docs(self) -> list[Document]:
        if self._docs is None:
            self._docs = list(self.corpus)
        return self._docs

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        module = self.trainer.lightning_module if getattr(self, "trainer", None) else None
        skip = int(module.lm_steps.item()) * self.batch_size if module is not None else self.skip_contexts
        stream = ContextStream(
            self.docs(),
            self.tokenizer,
            context_length=self.context_length,
            holdout_every=self.holdout_every,
            split="train",
            limit=self.contexts_per_rank,
            rank=rank,
            world=world,
            skip=skip,
            seed=self.seed,
        )
        return DataLoader(stream, batch_size=self.batch_size, num_workers=0)

    def holdout_contexts_tensor(self) -> torch.Tensor:
        """Held-out contexts [N, T] (the same on every rank)."""
        stream = ContextStream(
            self.docs(),
            self.tokenizer,
            context_length=self.context_length,
            holdout_every=self.holdout_every,
            split="holdout",
            limit=self.holdout_contexts,
            seed=self.seed,
        )
        return torch.stack(list(stream))
