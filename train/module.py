"""The LightningModule: one forward pass of the frozen LM feeds one Top-k SAE per requested layer.

Manual optimisation: each LM batch is harvested (or read from the activation cache), pushed into a
shuffle buffer per layer, and as many SAE steps are taken as ``sae_batch``-sized batches were produced, so
every DDP rank takes the same number of steps. After each step the decoder's parallel gradient is removed
before Adam and the decoder rows are renormalised after it; latents that have not fired for
``dead_tokens`` head vectors count as dead and get the AuxK loss.
"""

from __future__ import annotations

import time

import lightning as L
import torch
import torch.distributed as dist

from s3attn.errors import S3Error
from s3attn.saes.sae import SaeConfig, TopKSAE, default_lr
from s3attn.train.config import TrainConfig
from s3attn.train.harvest import ShuffleBuffer, harvest


class SaeTrainer(L.LightningModule):
    def __init__(self, cfg: TrainConfig, lm, head_dim: int, *, cache_writer=None):
        super().__init__()
        self.cfg = cfg
        self.automatic_optimization = False
        object.__setattr__(self, "_lm", lm)  # frozen LM: not a submodule, not in checkpoints
        latents = cfg.latents or cfg.expansion * head_dim
        dtype = torch.bfloat16 if cfg.sae_dtype == "bfloat16" else torch.float32
        self.sae_cfg = SaeConfig(d_in=head_dim, num_latents=latents, k=cfg.k)
        self.saes = torch.nn.ModuleDict(
            {str(layer): TopKSAE(self.sae_cfg, dtype=dtype) for layer in cfg.layers}
        )
        for layer in cfg.layers:
            self.register_buffer(f"since_fired_{layer}", torch.zeros(latents, dtype=torch.long))
        self.register_buffer("lm_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("vectors_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("pending", torch.zeros((), dtype=torch.long))
        self.register_buffer("b_dec_ready", torch.zeros((), dtype=torch.bool))
        self.buffers_: dict[int, ShuffleBuffer] = {}
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.cache_writer = cache_writer
        self.last_metrics: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self._steps0 = 0

    # ---- plumbing -----------------------------------------------------------------------------------
    @property
    def lm(self):
        return self._lm

    def _buffer(self, layer: int) -> ShuffleBuffer:
        if layer not in self.buffers_:
            self.buffers_[layer] = ShuffleBuffer(self.cfg.buffer, self.sae_cfg.d_in, device=self.device)
        return self.buffers_[layer]

    def on_fit_start(self) -> None:
        if self.lm is not None:
            self.lm.to(self.device)
        for buf in self.buffers_.values():  # restored on the CPU before the module moved to its device
            buf.data = buf.data.to(self.device)
        self._t0, self._steps0 = time.perf_counter(), int(self.lm_steps)
        if self.cache_writer is not None:
            self.cache_writer.rank = self.global_rank

    def configure_optimizers(self):
        lr = self.cfg.lr or default_lr(self.sae_cfg.num_latents)
        return torch.optim.Adam(self.saes.parameters(), lr=lr, eps=6.25e-10)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Shuffle buffers and the generator differ per rank: gather all of them (every rank runs this hook).
        state = {
            "buffers": {layer: buf.state_dict() for layer, buf in self.buffers_.items()},
            "generator": self.generator.get_state(),
        }
        states = [state]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, state)
        checkpoint["s3attn_rank_states"] = states

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # The data position is ``lm_steps`` (a buffer), not Lightning's loop counters: drop those, so a resumed
        # run (also one with a larger --tokens budget) streams exactly the batches the stopped one had left.
        checkpoint.pop("loops", None)
        states = checkpoint.get("s3attn_rank_states")
        if states is None:  # single-process states of older checkpoints
            states = [
                {
                    "buffers": checkpoint.get("s3attn_buffers", {}),
                    "generator": checkpoint.get("s3attn_generator"),
                }
            ]
        world = self.trainer.world_size if self._trainer is not None else 1
        if len(states) != world:
            raise S3Error(
                f"--resume: the training state was saved by {len(states)} process(es), not {world}; "
                f"resume with the same --devices/--num-nodes"
            )
        state = states[self.global_rank]
        for layer, buf_state in state["buffers"].items():
            self._buffer(int(layer)).load_state_dict(buf_state)
        if state["generator"] is not None:
            self.generator.set_state(state["generator"])

    # ---- one LM batch -------------------------------------------------------------------------------
    def _vectors(self, batch) -> dict[int, torch.Tensor]:
        if isinstance(batch, dict):  # from the activation cache
            return {int(k): v.to(self.device).float() for k, v in batch.items()}
        vecs = harvest(
            self.lm, batch.to(self.device), list(self.cfg.layers), self.cfg.q_fraction, self.generator
        )
        if self.cache_writer is not None:
            self.cache_writer.append(vecs)
        return vecs

    def training_step(self, batch, batch_idx: int) -> None:
        vecs = self._vectors(batch)
        n_new = next(iter(vecs.values())).shape[0]
        if not bool(self.b_dec_ready):
            for layer, x in vecs.items():
                sae = self.saes[str(layer)]
                sae.init_b_dec(x[: self.cfg.sae_batch * 4].to(sae.dtype), method=self.cfg.b_dec_init)
                if dist.is_available() and dist.is_initialized():  # all ranks start from rank 0's b_dec
                    dist.broadcast(sae.b_dec.data, src=0)
            self.b_dec_ready.fill_(True)
        batch_size = self.cfg.sae_batch
        for layer, x in vecs.items():
            buf = self._buffer(layer)
            while buf.room() < x.shape[0]:
                self._sae_step(batch_size)
            buf.push(x)
        self.pending += n_new
        while int(self.pending) >= batch_size and all(b.ready(batch_size) for b in self.buffers_.values()):
            self._sae_step(batch_size)
        self.lm_steps += 1
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        self.log(
            "tokens_per_s",
            (int(self.lm_steps) - self._steps0) * batch.numel() / elapsed
            if not isinstance(batch, dict)
            else 0.0,
            prog_bar=False,
        )

    def _sae_step(self, batch_size: int) -> None:
        opt = self.optimizers()
        losses = []
        metrics: dict[str, float] = {}
        for layer in self.cfg.layers:
            sae = self.saes[str(layer)]
            x = self._buffer(layer).pop(batch_size, self.generator).to(sae.dtype)
            since = getattr(self, f"since_fired_{layer}")
            dead = since >= self.cfg.dead_tokens
            out = sae(x, dead_mask=dead if bool(dead.any()) else None, auxk_coef=self.cfg.auxk_coef)
            losses.append(out.fvu + out.auxk_loss)
            with torch.no_grad():
                fired = torch.zeros_like(since, dtype=torch.bool)
                fired[out.top_indices.flatten()] = True
                if dist.is_available() and dist.is_initialized():
                    fired_i = fired.to(torch.int32)
                    dist.all_reduce(fired_i, op=dist.ReduceOp.MAX)
                    fired = fired_i.bool()
                since += x.shape[0]
                since[fired] = 0
            metrics[f"L{layer}/fvu"] = out.fvu.detach().item()
            metrics[f"L{layer}/auxk"] = out.auxk_loss.detach().item()
            metrics[f"L{layer}/dead_frac"] = float(dead.float().mean())
            metrics[f"L{layer}/l0"] = float((out.top_acts > 0).sum(-1).float().mean())
        opt.zero_grad(set_to_none=True)
        self.manual_backward(torch.stack(losses).sum())
        for sae in self.saes.values():
            sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        for sae in self.saes.values():
            sae.set_decoder_norm_to_unit_norm()
        self.pending -= batch_size
        self.vectors_seen += batch_size
        self.last_metrics = metrics
        self.log_dict(metrics, prog_bar=False)
        self.log(
            "fvu",
            sum(v for k, v in metrics.items() if k.endswith("/fvu")) / len(self.cfg.layers),
            prog_bar=True,
        )

    # ---- evaluation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def holdout_vectors(self, contexts_NT: torch.Tensor) -> dict[int, torch.Tensor]:
        """Per layer, the held-out K/Q head vectors [N, D] (CPU) in the training mix, harvested ``lm_batch``
        contexts at a time with a fixed generator (so a cached copy matches a fresh harvest)."""
        gen = torch.Generator().manual_seed(self.cfg.seed + 1)
        parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in self.cfg.layers}
        for i in range(0, contexts_NT.shape[0], self.cfg.lm_batch):
            vecs = harvest(
                self.lm,
                contexts_NT[i : i + self.cfg.lm_batch].to(self.device),
                list(self.cfg.layers),
                self.cfg.q_fraction,
                gen,
            )
            for layer, x in vecs.items():
                parts[layer].append(x.cpu())
        return {layer: torch.cat(xs) for layer, xs in parts.items()}

    @torch.no_grad()
    def evaluate(self, vectors: dict[int, torch.Tensor]) -> dict[int, dict[str, float]]:
        """FVU, L0 and dead fraction per layer on held-out head vectors (from ``holdout_vectors``)."""
        result = {}
        for layer, x_ND in vectors.items():
            sae = self.saes[str(layer)]
            x = x_ND.to(self.device).float()
            err, l0 = 0.0, 0.0
            fired = torch.zeros(self.sae_cfg.num_latents, dtype=torch.bool)
            for i in range(0, x.shape[0], self.cfg.sae_batch):
                out = sae(x[i : i + self.cfg.sae_batch].to(sae.dtype))
                err += (out.sae_out.float() - x[i : i + self.cfg.sae_batch]).pow(2).sum().item()
                l0 += float((out.top_acts > 0).sum())
                fired[out.top_indices.flatten().cpu()] = True
            total_var = (x - x.mean(0)).pow(2).sum().item()
            since = getattr(self, f"since_fired_{layer}").cpu()
            result[layer] = {
                "fvu": err / max(total_var, 1e-12),
                "l0": l0 / max(x.shape[0], 1),
                "dead_fraction": float((since >= self.cfg.dead_tokens).float().mean()),
                "holdout_unfired_fraction": float((~fired).float().mean()),
                "holdout_vectors": int(x.shape[0]),
            }
        return result
