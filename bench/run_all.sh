#!/usr/bin/env bash
# Run every benchmark in sequence; each prints its ratios and writes bench/out/<name>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
python bench/bench_sae.py
python bench/bench_harvest.py
python bench/bench_index.py
python bench/bench_retrieval.py
