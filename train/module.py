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
        dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
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

    def configure_optimizers(self):
        lr = self.cfg.lr or default_lr(self.sae_cfg.num_latents)
        return torch.optim.Adam(self.saes.parameters(), lr=lr, eps=6.25e-10)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["s3attn_buffers"] = {layer: buf.state_dict() for layer, buf in self.buffers_.items()}
        checkpoint["s3attn_generator"] = self.generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for layer, state in checkpoint.get("s3attn_buffers", {}).items():
            self._buffer(int(layer)).load_state_dict(state)
        if "s3attn_generator" in checkpoint:
            self.generator.set_state(checkpoint["s3attn_generator"])

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
                self.saes[str(layer)].init_b_dec(
                    x[: self.cfg.sae_batch * 4].to(self.saes[str(layer)].dtype), method=self.cfg.b_dec_init
                )
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
            float(self.lm_steps) * batch.numel() / elapsed if not isinstance(batch, dict) else 0.0,
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
            metrics[f"L{layer}/fvu"] = float(out.fvu)
            metrics[f"L{layer}/auxk"] = float(out.auxk_loss)
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
    def evaluate(self, contexts_NT: torch.Tensor) -> dict[int, dict[str, float]]:
        """FVU, L0 and dead fraction per layer on held-out contexts (keys and queries in the training mix)."""
        gen = torch.Generator().manual_seed(self.cfg.seed + 1)
        sums: dict[int, dict[str, float]] = {}
        fired = {layer: torch.zeros(self.sae_cfg.num_latents, dtype=torch.bool) for layer in self.cfg.layers}
        for i in range(0, contexts_NT.shape[0], self.cfg.lm_batch):
            vecs = harvest(
                self.lm,
                contexts_NT[i : i + self.cfg.lm_batch].to(self.device),
                list(self.cfg.layers),
                self.cfg.q_fraction,
                gen,
            )
            for layer, x in vecs.items():
                sae = self.saes[str(layer)]
                out = sae(x.to(sae.dtype))
                err = (out.sae_out.float() - x).pow(2).sum().item()
                s = sums.setdefault(layer, {"err": 0.0, "x": [], "l0": 0.0, "n": 0})
                s["err"] += err
                s["x"].append(x.cpu())
                s["l0"] += float((out.top_acts > 0).sum())
                s["n"] += x.shape[0]
                fired[layer][out.top_indices.flatten().cpu()] = True
        result = {}
        for layer, s in sums.items():
            x = torch.cat(s["x"])
            total_var = (x - x.mean(0)).pow(2).sum().item()
            since = getattr(self, f"since_fired_{layer}").cpu()
            result[layer] = {
                "fvu": s["err"] / max(total_var, 1e-12),
                "l0": s["l0"] / s["n"],
                "dead_fraction": float((since >= self.cfg.dead_tokens).float().mean()),
                "holdout_unfired_fraction": float((~fired[layer]).float().mean()),
                "holdout_vectors": s["n"],
            }
        return result
