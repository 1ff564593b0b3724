"""Why a bf16 index build is not 2.5x an fp32 one on this CPU: the two kinds of work in a prefill forward,
timed side by side in fp32 and bf16 at SmolLM2's shapes over one 2,048-token chunk.

- ``matmul``: a linear of the MLP ([2048, 576] @ [576, 1536]);
- ``attention``: causal ``scaled_dot_product_attention`` of 9 query heads of dim 64 over 2,048 tokens
  (PyTorch's CPU kernel, as transformers' ``sdpa`` attention calls it).

    python bench/bench_attention.py [--reps 10]

Prints the median ms of each in each dtype and the bf16 speed-up; writes bench/out/attention.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

OUT = Path(__file__).resolve().parent / "out" / "attention.json"


def median_ms(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def kernels(dtype: torch.dtype) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 576, generator=g).to(dtype)
    w = torch.randn(576, 1536, generator=g).to(dtype)
    q, k, v = (torch.randn(1, 9, 2048, 64, generator=g).to(dtype) for _ in range(3))
    return {
        "matmul": lambda: x @ w,
        "attention": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    res: dict = {"threads": torch.get_num_threads(), "ms": {}}
    with torch.inference_mode():
        for _ in range(2):  # interleave the dtypes so load from other processes hits both alike
            for dtype in (torch.float32, torch.bfloat16):
                for name, fn in kernels(dtype).items():
                    res["ms"].setdefault(f"{name}/{dtype}", []).append(median_ms(fn, args.reps))
    res["ms"] = {key: min(vals) for key, vals in res["ms"].items()}
    for name in ("matmul", "attention"):
        fp32, bf16 = res["ms"][f"{name}/torch.float32"], res["ms"][f"{name}/torch.bfloat16"]
        res[f"{name}_bf16_speedup"] = fp32 / bf16
        print(f"{name:9s} fp32 {fp32:8.2f} ms  bf16 {bf16:8.2f} ms  bf16 speed-up {fp32 / bf16:.2f}x")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
