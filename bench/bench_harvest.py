"""Harvest throughput in the auto precision vs fp32, and vs a bare forward pass to the same layer, side by side.

    python bench/bench_harvest.py [--layers 6,12,16] [--batch 4] [--context 512] [--reps 5]

The model is loaded twice: in the auto precision (``resolve_dtype("auto")``: bf16 on a CPU with
AVX512-BF16/AMX or a bf16 GPU, else fp32) and in fp32. Four runs per rep, alternating (the order rotating
each rep) so that load changes hit all alike: the harvest in each precision and a bare forward in each.
Every run stops after the deepest layer (the same stop mechanism); the harvest also taps K and Q at every
requested layer and mixes them (what training consumes, float32). Prints tokens/s of each and the ratios
harvest auto / harvest fp32 (the precision's gain) and harvest / bare forward in the same precision (goal:
>= 0.90); writes bench/out/harvest.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from s3attn.models.loading import load_model
from s3attn.models.precision import resolve_dtype
from s3attn.models.taps import forward_to_layer
from s3attn.train.harvest import harvest

RUNS = ("harvest_auto", "harvest_fp32", "bare_auto", "bare_fp32")


def timed_reps(
    models: dict, ids: torch.Tensor, layers: list[int], args: argparse.Namespace
) -> tuple[dict, dict]:
    """Wall and process CPU seconds of each run per rep, the runs alternating (order rotating each rep)."""
    gen = torch.Generator().manual_seed(0)
    for model in models.values():  # warm-up
        forward_to_layer(model, ids, max(layers))
        harvest(model, ids, layers, args.q_fraction, gen)
    secs: dict[str, list[float]] = {r: [] for r in RUNS}
    cpu: dict[str, list[float]] = {r: [] for r in RUNS}
    for rep in range(args.reps):
        for run in RUNS[rep % len(RUNS) :] + RUNS[: rep % len(RUNS)]:
            kind, prec = run.split("_")
            t, c = time.perf_counter(), time.process_time()
            if kind == "bare":
                forward_to_layer(models[prec], ids, max(layers))
            else:
                harvest(models[prec], ids, layers, args.q_fraction, gen)
            secs[run].append(time.perf_counter() - t)
            cpu[run].append(time.process_time() - c)
    return secs, cpu


def summarise(secs: dict, cpu: dict, n: int) -> dict:
    """Tokens/s (wall-clock medians) of each run and the ratios, by wall clock and by process CPU time."""
    mc = {run: statistics.median(v) for run, v in cpu.items()}
    tps = {run: n / statistics.median(v) for run, v in secs.items()}
    return {
        "seconds": secs,
        "tokens_per_s": tps,
        "ratio_auto_harvest_over_fp32_harvest": tps["harvest_auto"] / tps["harvest_fp32"],
        "ratio_auto_harvest_over_bare_auto": tps["harvest_auto"] / tps["bare_auto"],
        "ratio_fp32_harvest_over_bare_fp32": tps["harvest_fp32"] / tps["bare_fp32"],
        "ratio_auto_bare_over_fp32_bare": tps["bare_auto"] / tps["bare_fp32"],
        "cpu_seconds": cpu,
        "cpu_ratio_auto_harvest_over_fp32_harvest": mc["harvest_fp32"] / mc["harvest_auto"],
        "cpu_ratio_auto_harvest_over_bare_auto": mc["bare_auto"] / mc["harvest_auto"],
        "cpu_ratio_auto_bare_over_fp32_bare": mc["bare_fp32"] / mc["bare_auto"],
    }


def print_summary(res: dict, args: argparse.Namespace, last_layer: int) -> None:
    tps, name = res["tokens_per_s"], res["dtype_auto"]
    print(
        f"{args.batch} x {args.context} tokens per rep, {args.reps} reps side by side; auto precision: {name}"
    )
    print(
        f"tokens/s: harvest {name} {tps['harvest_auto']:.0f}, harvest float32 {tps['harvest_fp32']:.0f}, "
        f"bare forward to layer {last_layer} {name} {tps['bare_auto']:.0f}, float32 {tps['bare_fp32']:.0f}"
    )
    print(
        f"ratio harvest {name} / harvest float32: {res['ratio_auto_harvest_over_fp32_harvest']:.2f}x "
        f"(bare {name} / bare float32: {res['ratio_auto_bare_over_fp32_bare']:.2f}x)"
    )
    print(
        f"ratio harvest / bare in the same precision: {name} {res['ratio_auto_harvest_over_bare_auto']:.3f}, "
        f"float32 {res['ratio_fp32_harvest_over_bare_fp32']:.3f} (goal >= 0.90)"
    )
    print(
        f"by process CPU time: harvest {name} / float32 {res['cpu_ratio_auto_harvest_over_fp32_harvest']:.2f}x, "
        f"bare {res['cpu_ratio_auto_bare_over_fp32_bare']:.2f}x; harvest / bare {name} "
        f"{res['cpu_ratio_auto_harvest_over_bare_auto']:.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layers", default="6,12,16")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--q-fraction", type=float, default=0.5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "harvest.json"))
    args = ap.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    dt = resolve_dtype("auto")
    lm = load_model(args.model)
    models = {
        "fp32": lm.model,
        "auto": load_model(args.model, dtype=dt).model if dt != torch.float32 else lm.model,
    }
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(100, lm.tokenizer.vocab_size - 100, (args.batch, args.context), generator=gen)
    secs, cpu = timed_reps(models, ids, layers, args)
    res = {
        "model": lm.model_id,
        "layers": layers,
        "tokens_per_rep": ids.numel(),
        "reps": args.reps,
        "threads": torch.get_num_threads(),
        "dtype_auto": str(dt).removeprefix("torch."),
        **summarise(secs, cpu, ids.numel()),
    }
    print_summary(res, args, max(layers))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
