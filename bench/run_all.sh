#!/usr/bin/env bash
# Run every benchmark in sequence; each prints its ratios and writes bench/out/<name>.json.
# bench_harvest, bench_index and bench_retrieval time the auto precision (bf16 where the CPU/GPU computes it)
# side by side with fp32; bench_precision measures what bf16/fp16 change in the index's codes.
set -euo pipefail
cd "$(dirname "$0")/.."
python bench/bench_sae.py
python bench/bench_harvest.py
python bench/bench_index.py
python bench/bench_precision.py
python bench/bench_retrieval.py
python bench/bench_scale.py --work runs/scale --out bench/out/scale.json  # builds 1M/4M/16M-token indexes once (~12 GB in runs/scale)
