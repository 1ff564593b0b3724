"""Training throughput of our TopKSAE vs eai-sparsify's SparseCoder (head vectors per second).

One training step = what each trainer does per batch: unit-norm the decoder, forward, FVU (+ AuxK when
--dead-frac > 0) backward, mark fired latents, drop the decoder-gradient component parallel to the decoder
rows, Adam step, zero_grad. Both models start from the same weights and see the same batches; steps of the
two are interleaved so that load from other processes hits both alike; the median step time is reported.

    python bench/bench_sae.py [--latents 4096 8192] [--steps 20] [--batch 4096] [--d-in 64] [--k 32]

Writes bench/out/sae.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from s3attn.saes import SaeConfig, TopKSAE, default_lr

OUT = Path(__file__).resolve().parent / "out" / "sae.json"


def _import_sparsify():
    os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")  # CPU: its eager (embedding_bag) decoder
    with contextlib.redirect_stdout(io.StringIO()):  # it prints which decoder it picked
        from sparsify import SparseCoder, SparseCoderConfig
    return SparseCoder, SparseCoderConfig


def make_step(model, opt, fwd_kwargs: dict, auxk_alpha: float, did_fire: torch.Tensor):
    def step(x: torch.Tensor) -> float:
        model.set_decoder_norm_to_unit_norm()
        out = model(x, **fwd_kwargs)
        loss = out.fvu + auxk_alpha * out.auxk_loss if fwd_kwargs else out.fvu
        loss.backward()
        did_fire[out[2].flatten()] = True  # latent_indices / top_indices
        model.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        return float(out.fvu.detach())

    return step


def bench_one(num_latents: int, args, SparseCoder, SparseCoderConfig) -> dict:
    torch.manual_seed(0)
    batches = [torch.randn(args.batch, args.d_in) for _ in range(4)]
    theirs = SparseCoder(args.d_in, SparseCoderConfig(num_latents=num_latents, k=args.k))
    ours = TopKSAE(SaeConfig(d_in=args.d_in, num_latents=num_latents, k=args.k))
    ours.load_state_dict(theirs.state_dict())
    for model in (theirs, ours):
        with torch.no_grad():
            model.b_dec.copy_(batches[0].mean(0))  # both trainers' first-batch mean init
    lr = default_lr(num_latents)
    opt_t, opt_o = torch.optim.Adam(theirs.parameters(), lr=lr), torch.optim.Adam(ours.parameters(), lr=lr)

    dead = torch.zeros(num_latents, dtype=torch.bool)
    dead[: int(args.dead_frac * num_latents)] = True
    use_aux = args.dead_frac > 0
    # sparsify returns AuxK unscaled (its trainer multiplies by auxk_alpha); ours is scaled by auxk_coef
    kw_t = {"dead_mask": dead} if use_aux else {}
    kw_o = {"dead_mask": dead, "auxk_coef": 1 / 32} if use_aux else {}
    step_t = make_step(theirs, opt_t, kw_t, 1 / 32, torch.zeros_like(dead))
    step_o = make_step(ours, opt_o, kw_o, 1.0, torch.zeros_like(dead))

    first_t, first_o = step_t(batches[0]), step_o(batches[0])
    for i in range(1, args.warmup):
        step_t(batches[i % 4])
        step_o(batches[i % 4])
    times_t, times_o = [], []
    for i in range(args.steps):
        x = batches[i % 4]
        pair = [(step_t, times_t), (step_o, times_o)]
        for fn, sink in pair if i % 2 == 0 else pair[::-1]:
            t0 = time.perf_counter()
            fn(x)
            sink.append(time.perf_counter() - t0)
    med_t, med_o = statistics.median(times_t), statistics.median(times_o)
    return {
        "num_latents": num_latents,
        "sparsify_vec_per_s": args.batch / med_t,
        "ours_vec_per_s": args.batch / med_o,
        "ratio_ours_over_sparsify": med_t / med_o,
        "sparsify_step_ms_median": 1e3 * med_t,
        "ours_step_ms_median": 1e3 * med_o,
        "sparsify_step_ms_min": 1e3 * min(times_t),
        "ours_step_ms_min": 1e3 * min(times_o),
        "first_step_fvu": {"sparsify": first_t, "ours": first_o},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latents", type=int, nargs="+", default=[4096, 8192])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per model and size")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--d-in", type=int, default=64)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--dead-frac", type=float, default=0.0, help="mark this fraction dead to time AuxK too")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    SparseCoder, SparseCoderConfig = _import_sparsify()

    results = []
    for num_latents in args.latents:
        r = bench_one(num_latents, args, SparseCoder, SparseCoderConfig)
        results.append(r)
        print(
            f"d_in={args.d_in} latents={num_latents} k={args.k} batch={args.batch}: "
            f"sparsify {r['sparsify_vec_per_s']:,.0f} vec/s, ours {r['ours_vec_per_s']:,.0f} vec/s, "
            f"ours/sparsify {r['ratio_ours_over_sparsify']:.2f}x "
            f"(first-step FVU {r['first_step_fvu']['sparsify']:.5f} vs {r['first_step_fvu']['ours']:.5f})"
        )
    report = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "processor": platform.processor() or platform.machine(),
            "loadavg_1m": os.getloadavg()[0],
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
