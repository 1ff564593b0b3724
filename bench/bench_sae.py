"""Training throughput of our TopKSAE vs eai-sparsify's SparseCoder (head vectors per second).

One training step = what each trainer does per batch: unit-norm the decoder, forward, FVU (+ AuxK when
--dead-frac > 0) backward, mark fired latents, drop the decoder-gradient component parallel to the decoder
rows, Adam step, zero_grad. Both models start from the same weights, use the same Adam settings and see
the same batches; their steps are interleaved so that load from other processes hits both alike.

Two measures per size:

- ``wall``: wall-clock with torch's default threads (what a user sees; noisy on a shared machine);
- ``cpu1``: CPU time of the step with one torch thread, which other processes' load barely moves: the
  fairest figure for the work each implementation does.

    python bench/bench_sae.py [--latents 4096 8192] [--steps 16] [--batch 4096] [--modes wall cpu1]

Prints vectors/s and the ratio ours/sparsify (median step time) and writes bench/out/sae.json.
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
from collections.abc import Callable
from pathlib import Path

import torch

from s3attn.saes import SaeConfig, TopKSAE, default_lr

OUT = Path(__file__).resolve().parent / "out" / "sae.json"


def _import_sparsify():
    os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")  # CPU: its eager (embedding_bag) decoder
    with contextlib.redirect_stdout(io.StringIO()):  # it prints which decoder it picked
        from sparsify import SparseCoder, SparseCoderConfig
    return SparseCoder, SparseCoderConfig


def make_step(model, opt, fwd_kwargs: dict, auxk_alpha: float, did_fire: torch.Tensor) -> Callable:
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


def _timed(mode: str, steps: int, pairs: list[tuple[Callable, list]], batches: list[torch.Tensor]) -> None:
    clock = time.perf_counter if mode == "wall" else time.thread_time
    for i in range(steps):
        x = batches[i % len(batches)]
        for fn, sink in pairs if i % 2 == 0 else pairs[::-1]:
            t0 = clock()
            fn(x)
            sink.append(clock() - t0)


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

    result: dict = {"num_latents": num_latents}
    result["first_step_fvu"] = {"sparsify": step_t(batches[0]), "ours": step_o(batches[0])}
    default_threads = torch.get_num_threads()
    for mode in args.modes:
        torch.set_num_threads(1 if mode == "cpu1" else default_threads)
        try:
            _timed(mode, args.warmup, [(step_t, []), (step_o, [])], batches)
            times_t: list[float] = []
            times_o: list[float] = []
            _timed(mode, args.steps, [(step_t, times_t), (step_o, times_o)], batches)
        finally:
            torch.set_num_threads(default_threads)
        med_t, med_o = statistics.median(times_t), statistics.median(times_o)
        result[mode] = {
            "threads": 1 if mode == "cpu1" else default_threads,
            "sparsify_vec_per_s": args.batch / med_t,
            "ours_vec_per_s": args.batch / med_o,
            "ratio_ours_over_sparsify": med_t / med_o,
            "sparsify_step_ms": {"median": 1e3 * med_t, "min": 1e3 * min(times_t)},
            "ours_step_ms": {"median": 1e3 * med_o, "min": 1e3 * min(times_o)},
        }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latents", type=int, nargs="+", default=[4096, 8192])
    ap.add_argument("--steps", type=int, default=16, help="timed steps per model, size and mode")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--d-in", type=int, default=64)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--modes", nargs="+", choices=["wall", "cpu1"], default=["wall", "cpu1"])
    ap.add_argument("--dead-frac", type=float, default=0.0, help="mark this fraction dead to time AuxK too")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    SparseCoder, SparseCoderConfig = _import_sparsify()

    load_before = os.getloadavg()[0]
    results = []
    for num_latents in args.latents:
        r = bench_one(num_latents, args, SparseCoder, SparseCoderConfig)
        results.append(r)
        fvu = r["first_step_fvu"]
        print(
            f"d_in={args.d_in} latents={num_latents} k={args.k} batch={args.batch} "
            f"(first-step FVU sparsify {fvu['sparsify']:.5f}, ours {fvu['ours']:.5f})"
        )
        for mode in args.modes:
            m = r[mode]
            print(
                f"  {mode:4s} ({m['threads']} thread{'s' if m['threads'] > 1 else ''}): "
                f"sparsify {m['sparsify_vec_per_s']:9,.0f} vec/s  ours {m['ours_vec_per_s']:9,.0f} vec/s  "
                f"ours/sparsify {m['ratio_ours_over_sparsify']:.2f}x"
            )
    report = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "processor": platform.processor() or platform.machine(),
            "loadavg_1m_before_after": [load_before, os.getloadavg()[0]],
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"load average (1 min) before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f}; wrote {args.out}")


if __name__ == "__main__":
    main()
