"""Training throughput of our TopKSAE vs eai-sparsify's SparseCoder (head vectors per second), fp32 and bf16.

One training step = what each trainer does per batch: unit-norm the decoder, forward, FVU (+ AuxK when
--dead-frac > 0) backward, mark fired latents, drop the decoder-gradient component parallel to the decoder
rows, Adam step, zero_grad. All models start from the same weights, use the same Adam settings and see
the same batches; their steps are interleaved (both implementations, every dtype) so that load from other
processes hits all alike.

What bfloat16 means (``--bf16``):

- ``autocast`` (default): float32 parameters, Adam state and updates; the forward runs under
  ``torch.autocast("cpu", dtype=torch.bfloat16)``, which is what eai-sparsify's trainer does (its
  ``SparseCoder.forward`` is decorated with a CUDA bf16 autocast; on CPU the bench enters the CPU one).
  sparsify's encoder ``F.linear``, ReLU and top-k then run in bf16; ours runs its encoder matmul and top-k
  search in bf16 (the only ``N x latents`` work), the rest stays float32 in both.
- ``params``: bfloat16 parameters and inputs for both (what ``s3-train-sae --sae-dtype bfloat16`` does for
  ours; ``SparseCoder(..., dtype=torch.bfloat16)`` for sparsify); Adam runs on the bf16 parameters.

Two measures per size:

- ``wall``: wall-clock with torch's default threads (what a user sees; noisy on a shared machine);
- ``cpu1``: CPU time of the step with one torch thread, which other processes' load barely moves: the
  fairest figure for the work each implementation does.

After timing, every model has taken the same steps on the same batches; the FVU of each on a held-out batch
(in its own precision) shows whether bf16 trains like fp32.

    python bench/bench_sae.py [--latents 4096 8192] [--steps 16] [--batch 4096] [--modes wall cpu1]
                              [--dtypes float32 bfloat16] [--bf16 autocast|params]

Prints vectors/s, ours/sparsify in each dtype, bf16/fp32 of each, and writes bench/out/sae.json.
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
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
IMPLS = ("sparsify", "ours")


def _import_sparsify():
    os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")  # CPU: its eager (embedding_bag) decoder
    with contextlib.redirect_stdout(io.StringIO()):  # it prints which decoder it picked
        from sparsify import SparseCoder, SparseCoderConfig
    return SparseCoder, SparseCoderConfig


def _precision(autocast: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)


def make_step(model, opt, fwd_kwargs: dict, auxk_alpha: float, did_fire: torch.Tensor, autocast: bool):
    def step(x: torch.Tensor) -> float:
        model.set_decoder_norm_to_unit_norm()
        with _precision(autocast):
            out = model(x, **fwd_kwargs)
            loss = out.fvu + auxk_alpha * out.auxk_loss if fwd_kwargs else out.fvu
        loss.backward()
        did_fire[out[2].flatten()] = True  # latent_indices / top_indices
        model.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        return float(out.fvu.detach())

    return step


class Runner:
    """One (implementation, dtype) model with its optimizer, step function, batches and timings."""

    def __init__(self, model, step: Callable, batches: list[torch.Tensor], autocast: bool):
        self.model, self.step, self.batches, self.autocast = model, step, batches, autocast
        self.times: list[float] = []

    @torch.no_grad()
    def eval_fvu(self, x: torch.Tensor) -> float:
        self.model.set_decoder_norm_to_unit_norm()
        with _precision(self.autocast):
            return float(self.model(x).fvu)


def _build(
    num_latents: int, args, sparsify_cls, batches: list[torch.Tensor]
) -> dict[tuple[str, str], Runner]:
    """A runner per (dtype, implementation), all from the same initial weights and b_dec."""
    SparseCoder, SparseCoderConfig = sparsify_cls
    torch.manual_seed(0)
    sp_cfg = SparseCoderConfig(num_latents=num_latents, k=args.k)
    init = SparseCoder(args.d_in, sp_cfg).state_dict()
    init["b_dec"] = batches[0].mean(0)  # both trainers' first-batch mean init
    dead = torch.zeros(num_latents, dtype=torch.bool)
    dead[: int(args.dead_frac * num_latents)] = True
    use_aux = args.dead_frac > 0
    # sparsify returns AuxK unscaled (its trainer multiplies by auxk_alpha); ours is scaled by auxk_coef
    kwargs = {
        "sparsify": ({"dead_mask": dead} if use_aux else {}, 1 / 32),
        "ours": ({"dead_mask": dead, "auxk_coef": 1 / 32} if use_aux else {}, 1.0),
    }
    runners = {}
    for name in args.dtypes:
        autocast = name == "bfloat16" and args.bf16 == "autocast"
        param_dtype = torch.float32 if autocast else DTYPES[name]
        data = [b.to(param_dtype) for b in batches]
        for impl in IMPLS:
            if impl == "sparsify":
                model = SparseCoder(args.d_in, sp_cfg, dtype=param_dtype)
            else:
                model = TopKSAE(
                    SaeConfig(d_in=args.d_in, num_latents=num_latents, k=args.k), dtype=param_dtype
                )
            model.load_state_dict(init)
            opt = torch.optim.Adam(model.parameters(), lr=default_lr(num_latents))
            fwd, alpha = kwargs[impl]
            step = make_step(model, opt, fwd, alpha, torch.zeros_like(dead), autocast)
            runners[name, impl] = Runner(model, step, data, autocast)
    return runners


def _timed(mode: str, steps: int, runners: list[Runner], record: bool) -> None:
    clock = time.perf_counter if mode == "wall" else time.thread_time
    for i in range(steps):
        for r in runners if i % 2 == 0 else runners[::-1]:
            x = r.batches[i % len(r.batches)]
            t0 = clock()
            r.step(x)
            if record:
                r.times.append(clock() - t0)


def _summary(runners: dict[tuple[str, str], Runner], args, threads: int) -> dict:
    med = {key: statistics.median(r.times) for key, r in runners.items()}
    out: dict = {"threads": threads}
    for name in args.dtypes:
        t_s, t_o = med[name, "sparsify"], med[name, "ours"]
        out[name] = {
            "sparsify_vec_per_s": args.batch / t_s,
            "ours_vec_per_s": args.batch / t_o,
            "ratio_ours_over_sparsify": t_s / t_o,
            "sparsify_step_ms": {"median": 1e3 * t_s, "min": 1e3 * min(runners[name, "sparsify"].times)},
            "ours_step_ms": {"median": 1e3 * t_o, "min": 1e3 * min(runners[name, "ours"].times)},
        }
    if {"float32", "bfloat16"} <= set(args.dtypes):
        out["bf16_over_fp32"] = {impl: med["float32", impl] / med["bfloat16", impl] for impl in IMPLS}
    return out


def bench_one(num_latents: int, args, sparsify_cls) -> dict:
    torch.manual_seed(0)
    batches = [torch.randn(args.batch, args.d_in) for _ in range(5)]
    held_out = batches.pop()
    runners = _build(num_latents, args, sparsify_cls, batches)
    result: dict = {"num_latents": num_latents}
    result["first_step_fvu"] = {f"{n}/{i}": r.step(r.batches[0]) for (n, i), r in runners.items()}
    steps_taken = 1
    default_threads = torch.get_num_threads()
    for mode in args.modes:
        threads = 1 if mode == "cpu1" else default_threads
        torch.set_num_threads(threads)
        try:
            for r in runners.values():
                r.times = []
            _timed(mode, args.warmup, list(runners.values()), record=False)
            _timed(mode, args.steps, list(runners.values()), record=True)
            steps_taken += args.warmup + args.steps
        finally:
            torch.set_num_threads(default_threads)
        result[mode] = _summary(runners, args, threads)
    result["held_out_fvu"] = {"after_steps": steps_taken}
    for (name, impl), r in runners.items():
        result["held_out_fvu"][f"{name}/{impl}"] = r.eval_fvu(held_out.to(r.batches[0].dtype))
    return result


def _print_size(r: dict, args) -> None:
    print(f"d_in={args.d_in} latents={r['num_latents']} k={args.k} batch={args.batch} (bf16 = {args.bf16})")
    for mode in args.modes:
        m = r[mode]
        head = f"  {mode:4s} ({m['threads']} thread{'s' if m['threads'] > 1 else ''})"
        for name in args.dtypes:
            d = m[name]
            print(
                f"{head} {name:8s}: sparsify {d['sparsify_vec_per_s']:9,.0f} vec/s  "
                f"ours {d['ours_vec_per_s']:9,.0f} vec/s  ours/sparsify {d['ratio_ours_over_sparsify']:.2f}x"
            )
            head = " " * len(head)
        if "bf16_over_fp32" in m:
            ratio = m["bf16_over_fp32"]
            print(f"{head} bf16/fp32: ours {ratio['ours']:.2f}x  sparsify {ratio['sparsify']:.2f}x")
    fvu = r["held_out_fvu"]
    cells = "  ".join(f"{key} {fvu[key]:.5f}" for key in fvu if key != "after_steps")
    print(f"  held-out FVU after {fvu['after_steps']} steps: {cells}")
    if {"float32", "bfloat16"} <= set(args.dtypes):
        rel = fvu["bfloat16/ours"] / fvu["float32/ours"] - 1
        print(f"  ours bf16 vs fp32 held-out FVU: {rel:+.2%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latents", type=int, nargs="+", default=[4096, 8192])
    ap.add_argument("--steps", type=int, default=16, help="timed steps per model, size and mode")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--d-in", type=int, default=64)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--modes", nargs="+", choices=["wall", "cpu1"], default=["wall", "cpu1"])
    ap.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    ap.add_argument("--bf16", choices=["autocast", "params"], default="autocast", help="see the docstring")
    ap.add_argument("--dead-frac", type=float, default=0.0, help="mark this fraction dead to time AuxK too")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    sparsify_cls = _import_sparsify()

    load_before = os.getloadavg()[0]
    results = []
    for num_latents in args.latents:
        results.append(bench_one(num_latents, args, sparsify_cls))
        _print_size(results[-1], args)
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
