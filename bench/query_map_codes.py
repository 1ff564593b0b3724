"""A try for the paper's query site (issue 14, target 5): a query map trained for **code overlap**.

``s3-train-sae query-map`` fits a ridge map from a query vector to the key the model's attention gives it,
in the key space; the key SAE then codes the mapped query. This script starts from that ridge map and trains
it further through the frozen key SAE encoder, so that the mapped query's code shares latents with the
attended key's code: per row, the cross-entropy between the softmax of the encoder's pre-activations and the
key's top-k code (activation x IDF^``--idf-power``, normalised), weighted by the attention mass, as in the
ridge fit. Same data as the ridge fit: training text only (never the evaluation essays), the most attended
key more than ``--local`` tokens back. Writes a query map file (``--out``) that ``--site query --query-map``
reads; it prints the top-k overlap of the codes (mapped query vs attended key, IDF-weighted) on held-out
contexts of the training text, before and after, per layer.

    python bench/query_map_codes.py --contexts 40 --out runs/query_map/query_map-codes.safetensors
    python bench/eval_fusions.py --variants s3.query.map,s3.query.codes --tasks literal_niah,paraphrase_niah,\\
        paraphrase_multikey --samples 10 --seeds 0,1,2 --lengths 16384 --budget 1024 --index-cache runs/icache
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from einops import einsum

from s3attn.corpus import Corpus
from s3attn.models.precision import resolve_dtype
from s3attn.saes.query_map import QueryMap
from s3attn.saes.stack import load_stack, resolve_release
from s3attn.train.query_map import NormalEquations, attention_rows, sample_contexts

SINK = 4


def harvest(model, contexts, layers, local: int) -> dict[int, tuple[torch.Tensor, ...]]:
    """Per layer: (query rows [N, H, D], attended key [N, H, D], attention mass [N, H])."""
    rows: dict[int, list[list[torch.Tensor]]] = {layer: [[], [], []] for layer in layers}
    for layer, *tensors in attention_rows(model, contexts, layers, sink=SINK, local=local, target="argmax"):
        for acc, t in zip(rows[layer], tensors):
            acc.append(t)
    return {layer: tuple(torch.cat(t) for t in v) for layer, v in rows.items()}


class CodeTarget:
    """The key SAE's frozen encoder and the target codes of attended keys."""

    def __init__(self, sae, keys_ND: torch.Tensor, idf_power: float):
        self.sae, self.idf_power = sae, idf_power
        self.w_enc, self.b_enc = sae.encoder.weight.detach(), sae.encoder.bias.detach()
        self.b_dec = sae.b_dec.detach()
        with torch.no_grad():
            df = torch.bincount(sae.encode(keys_ND).top_indices.reshape(-1), minlength=self.w_enc.shape[0])
        self.idf = 1.0 / (torch.log1p(df.float()) + 1.0)

    @torch.no_grad()
    def codes(self, y_NHD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights [N, H, k] summing to 1, latent ids [N, H, k]) of the keys' codes."""
        e = self.sae.encode(y_NHD.reshape(-1, y_NHD.shape[-1]))
        w = e.top_acts.float() * self.idf[e.top_indices] ** self.idf_power
        w = w / w.sum(1, keepdim=True).clamp_min(1e-9)
        return w.reshape(*y_NHD.shape[:2], -1), e.top_indices.reshape(*y_NHD.shape[:2], -1)

    def preacts(self, weight_HDD, bias_HD, q_NHD: torch.Tensor) -> torch.Tensor:
        x = einsum(q_NHD, weight_HDD, "n h d, h d e -> n h e") + bias_HD
        return (x - self.b_dec) @ self.w_enc.T + self.b_enc

    @torch.no_grad()
    def overlap(self, weight_HDD, bias_HD, data) -> float:
        """IDF-weighted share of the mapped query's top-k latents that the attended key's code holds."""
        q, y, m = data
        _, ids = self.codes(y)
        top = self.preacts(weight_HDD, bias_HD, q).topk(self.sae.cfg.k, dim=-1).indices
        hit = (top[..., None] == ids[..., None, :]).any(-1).float()
        w = self.idf[top]
        per_row = (hit * w).sum(-1) / w.sum(-1)
        return float((per_row * m).sum() / m.sum())


def refine(target: CodeTarget, w0, b0, data, steps: int, lr: float, batch: int, seed: int):
    """The ridge map ``(w0, b0)`` trained for code overlap (see the module docstring)."""
    q, y, m = data
    tw, ti = target.codes(y)
    weight, bias = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    opt = torch.optim.Adam([weight, bias], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(0, q.shape[0], (batch,), generator=gen)
        logp = torch.log_softmax(target.preacts(weight, bias, q[i]), -1)
        loss = -((tw[i] * logp.gather(-1, ti[i])).sum(-1) * m[i]).sum() / m[i].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return weight.detach(), bias.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", default="checkpoints/smollm2-135m-k32")
    ap.add_argument("--corpus", default="corpora/public-domain", help="training text (never evaluation text)")
    ap.add_argument("--contexts", type=int, default=40, help="contexts of 512 tokens to fit on")
    ap.add_argument("--local", type=int, default=64, help="the attended key lies more than this many back")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--idf-power", type=float, default=1.0)
    ap.add_argument("--out", default="runs/query_map/query_map-codes.safetensors")
    args = ap.parse_args()
    torch.manual_seed(0)
    rel = resolve_release(args.release, None)
    stack = load_stack(rel.path, rel.config, rel.layers, None, dtype=resolve_dtype("auto", "cpu"))
    model = stack.loaded.model
    corpus = Corpus(args.corpus, option="--corpus")
    ctxs = sample_contexts(corpus, stack.loaded.tokenizer, args.contexts + args.contexts // 4, 512)
    t0 = time.perf_counter()
    train, held = (
        harvest(model, ctxs[: args.contexts], rel.layers, args.local),
        harvest(model, ctxs[args.contexts :], rel.layers, args.local),
    )
    weights, biases = {}, {}
    for layer in rel.layers:
        q, y, m = train[layer]
        eq = NormalEquations(q.shape[1], q.shape[2])
        eq.add(q, y, m)
        w0, b0 = eq.solve(1e-3)
        target = CodeTarget(stack.saes[layer], y.reshape(-1, y.shape[-1]), args.idf_power)
        weights[layer], biases[layer] = refine(
            target, w0, b0, train[layer], args.steps, args.lr, args.batch, 0
        )
        before, after = (
            target.overlap(w0, b0, held[layer]),
            target.overlap(weights[layer], biases[layer], held[layer]),
        )
        print(f"layer {layer}: held-out code overlap ridge {before:.3f} -> trained {after:.3f}", flush=True)
    fit = {"sink": SINK, "local": args.local, "target": "argmax", "objective": "codes", "ridge": 1e-3,
           "contexts": args.contexts, "corpus": args.corpus, "steps": args.steps, "lr": args.lr,
           "batch": args.batch, "idf_power": args.idf_power}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    QueryMap(weights, biases, fit).save(Path(args.out))
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
