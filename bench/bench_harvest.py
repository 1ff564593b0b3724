"""Harvest throughput vs a bare forward pass of the model to the same layer, measured side by side.

    python bench/bench_harvest.py [--layers 6,12,16] [--batch 4] [--context 512] [--reps 5]

Both runs stop after the deepest layer (the same stop mechanism); the harvest also taps K and Q at every
requested layer and mixes them (what training consumes). Reps alternate bare/harvest so load changes hit
both. Prints tokens/s of each and the ratio harvest/bare (goal: >= 0.90); writes bench/out/harvest.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from s3attn.models.loading import load_model
from s3attn.models.taps import forward_to_layer
from s3attn.train.harvest import harvest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layers", default="6,12,16")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--q-fraction", type=float, default=0.5)
    args = ap.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    lm = load_model(args.model)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(100, lm.tokenizer.vocab_size - 100, (args.batch, args.context), generator=gen)
    forward_to_layer(lm.model, ids, max(layers))  # warm-up
    harvest(lm.model, ids, layers, args.q_fraction, gen)
    bare, harv = [], []
    for _ in range(args.reps):
        t = time.perf_counter()
        forward_to_layer(lm.model, ids, max(layers))
        bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        harvest(lm.model, ids, layers, args.q_fraction, gen)
        harv.append(time.perf_counter() - t)
    n = ids.numel()
    res = {
        "model": lm.model_id,
        "layers": layers,
        "tokens_per_rep": n,
        "threads": torch.get_num_threads(),
        "bare_tokens_per_s": n / statistics.median(bare),
        "harvest_tokens_per_s": n / statistics.median(harv),
    }
    res["ratio_harvest_over_bare"] = res["harvest_tokens_per_s"] / res["bare_tokens_per_s"]
    print(f"bare forward to layer {max(layers)}: {res['bare_tokens_per_s']:.0f} tokens/s")
    print(f"harvest (K+Q taps at {layers}, mix): {res['harvest_tokens_per_s']:.0f} tokens/s")
    print(f"ratio harvest/bare: {res['ratio_harvest_over_bare']:.3f}  (goal >= 0.90)")
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "harvest.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
