"""Optional Zarr cache of harvested head vectors: a second run with another k or width skips the LM.

Layout: ``<cache>/rank<r>/L<layer>`` float32 [N, head_dim], rows in harvest order (before shuffling),
``rows_per_step`` rows per LM step. Group attrs record what produced it (model, corpus, layers, context
length, K/Q mix, seed, world size, budget) and ``complete``; a cache is reused only when all of these
match and it is complete, and written only by a fresh (not resumed) run. Rank 0 creates the group before
the other ranks start; each rank writes its own ``rank<r>`` subgroup; rank 0 adds the held-out vectors
(``holdout/L<layer>``) and marks it complete after every rank has flushed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader, IterableDataset

from s3attn.errors import S3Error
from s3attn.paths import check_writable_dir

CHUNK_ROWS = 65536


class ActivationCache:
    def __init__(self, root: Path, key: dict, rank: int):
        self.root, self.key, self.rank = Path(root), key, rank
        self.complete = False
        self.writing = False
        self.group: zarr.Group | None = None
        self.pending: dict[int, list[np.ndarray]] = {}
        self.written: dict[int, int] = {}
        self.rows_per_step: int | None = None
        try:
            group = zarr.open_group(str(self.root), mode="r")
            attrs = dict(group.attrs)
            if (
                attrs.get("complete")
                and all(attrs.get(k) == v for k, v in key.items() if k != "tokens")
                and attrs.get("tokens", 0) >= key["tokens"]
            ):
                self.complete, self.group, self.rows_per_step = True, group, attrs["rows_per_step"]
        except (OSError, KeyError, ValueError, zarr.errors.BaseZarrError):  # no (readable) cache there
            pass

    @classmethod
    def for_run(cls, cfg, model_id: str, world: int) -> ActivationCache:
        import os

        from s3attn.models.precision import accelerator_device, dtype_name, resolve_dtype

        key = {
            "model_id": model_id,
            "corpus": str(Path(cfg.corpus).resolve()),
            "text_field": cfg.text_field,
            "layers": list(cfg.layers),
            "context_length": cfg.context_length,
            "q_fraction": cfg.q_fraction,
            "seed": cfg.seed,
            "holdout_every": cfg.holdout_every,
            "world": world,
            "lm_batch": cfg.lm_batch,
            "tokens": cfg.tokens,
            # vectors harvested in another model precision are other vectors
            "dtype": dtype_name(resolve_dtype(cfg.dtype, accelerator_device(cfg.accelerator))),
        }
        # Global rank before the trainer exists (Lightning's DDP launcher sets these for the ranks it starts).
        rank = int(os.environ.get("NODE_RANK", 0)) * cfg.devices + int(os.environ.get("LOCAL_RANK", 0))
        cache = cls(Path(cfg.cache_activations), key, rank)
        cache.writing = not cache.complete and not cfg.resume
        if cache.writing and rank == 0:
            cache._create(world)  # before trainer.fit starts the other ranks
        return cache

    def _create(self, world: int) -> None:
        if self.root.exists() and (
            not self.root.is_dir() or (any(self.root.iterdir()) and not (self.root / "zarr.json").is_file())
        ):
            raise S3Error(
                f"--cache-activations {self.root}: holds files that are not an activation cache; "
                f"choose an empty or new folder"
            )
        check_writable_dir(self.root.parent, "--cache-activations")
        group = zarr.open_group(str(self.root), mode="w")
        group.attrs.update({**self.key, "complete": False})
        for r in range(world):  # each rank writes only inside its own subgroup
            group.create_group(f"rank{r}")

    # ---- writing (during a harvesting run) ------------------------------------------------------------
    def append(self, vecs: dict[int, torch.Tensor]) -> None:
        if self.complete or not self.writing:
            return
        if self.group is None:
            self.group = zarr.open_group(str(self.root / f"rank{self.rank}"), mode="r+")
        for layer, x in vecs.items():
            if self.rows_per_step is None:  # a full LM batch; only the last one may be shorter
                self.rows_per_step = x.shape[0]
            self.pending.setdefault(layer, []).append(x.detach().float().cpu().numpy())
            if sum(a.shape[0] for a in self.pending[layer]) >= CHUNK_ROWS:
                self._flush(layer)

    def _flush(self, layer: int) -> None:
        rows = np.concatenate(self.pending.pop(layer, []) or [np.zeros((0, 1), np.float32)])
        if rows.shape[0] == 0:
            return
        name = f"L{layer}"
        start = self.written.get(layer, 0)
        if start == 0:
            arr = self.group.create_array(
                name, shape=rows.shape, chunks=(CHUNK_ROWS, rows.shape[1]), dtype="float32", overwrite=True
            )
        else:
            arr = self.group[name]
            arr.resize((start + rows.shape[0], rows.shape[1]))
        arr[start:] = rows
        self.written[layer] = start + rows.shape[0]

    def flush(self) -> None:
        """Write this rank's pending rows (every rank, after training)."""
        if self.complete or self.group is None or not self.writing:
            return
        for layer in list(self.pending):
            self._flush(layer)

    def finish(self, holdout: dict[int, torch.Tensor], holdout_contexts: int) -> None:
        """Rank 0, after every rank flushed: store the held-out vectors and mark the cache complete."""
        if self.complete or not self.writing:
            return
        root = zarr.open_group(str(self.root), mode="r+")
        for layer, x in holdout.items():
            root.create_array(f"holdout/L{layer}", data=x.float().cpu().numpy(), overwrite=True)
        root.attrs.update(
            {"complete": True, "rows_per_step": self.rows_per_step, "holdout_contexts": holdout_contexts}
        )
        self.complete = True

    # ---- reading (a run that skips the LM) -----------------------------------------------------------
    def holdout_vectors(self, holdout_contexts: int) -> dict[int, torch.Tensor] | None:
        """The cached held-out vectors, or None when they were made from another number of contexts."""
        if (
            not self.complete
            or self.group is None
            or self.group.attrs.get("holdout_contexts") != holdout_contexts
        ):
            return None
        arrays = {int(name[1:]): arr for name, arr in self.group["holdout"].arrays()}
        return {layer: torch.from_numpy(arrays[layer][:]) for layer in sorted(arrays)}

    def datamodule(self, base) -> L.LightningDataModule:
        return _CachedDataModule(self, base)


class _CachedStream(IterableDataset):
    def __init__(self, cache: ActivationCache, rank: int, skip_steps: int, steps: int):
        self.cache, self.rank, self.skip_steps, self.steps = cache, rank, skip_steps, steps

    def __len__(self) -> int:
        return max(0, self.steps - self.skip_steps)

    def __iter__(self) -> Iterator[dict[int, torch.Tensor]]:
        arrays = {int(name[1:]): arr for name, arr in self.cache.group[f"rank{self.rank}"].arrays()}
        n = self.cache.rows_per_step
        for step in range(self.skip_steps, self.steps):
            yield {layer: torch.from_numpy(arr[step * n : (step + 1) * n]) for layer, arr in arrays.items()}


class _CachedDataModule(L.LightningDataModule):
    def __init__(self, cache: ActivationCache, base):
        super().__init__()
        self.cache, self.base = cache, base

    def train_dataloader(self) -> DataLoader:
        module = self.trainer.lightning_module
        steps = -(-self.base.contexts_per_rank // self.base.batch_size)
        stream = _CachedStream(self.cache, self.trainer.global_rank, int(module.lm_steps), steps)
        return DataLoader(stream, batch_size=None)

    def holdout_contexts_tensor(self) -> torch.Tensor:
        return self.base.holdout_contexts_tensor()
