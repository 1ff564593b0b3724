#!/usr/bin/env bash
# Every held-out figure of the README (issue 14), in the order they were run:
#   1. bench/heldout.sh at 16k with answers, at 32k and 64k retrieval only (seed 100, budget 1024)
#   2. recall at scale: literal / paraphrased needles in a 256k-token index of text that does not repeat
#      (--haystack long), default posting budget against a full read (--max-postings 100000000)
#   3. bench_retrieval.py latency on the 1M-token index with the posting lists read per question
set -euo pipefail
R=${1:-docs/results}
GEN=--generate bash bench/heldout.sh "$R/heldout-16k" 16384
bash bench/heldout.sh "$R/heldout-32k-64k" 32768,65536
S="--tasks literal_niah,paraphrase_niah --samples 10 --seeds 100 --budget 1024 --no-generate --no-progress --index-cache ${CACHE:-runs/icache} --haystack long"
s3-eval $S --lengths 262144 --methods bm25,s3,hybrid --out "$R/scale-256k"
s3-eval $S --lengths 262144 --methods s3 --max-postings 100000000 --out "$R/scale-256k-full-read"
#   2b. the same needles at 64k and 256k (--same-needles), recall lost with the index's size
s3-eval $S --same-needles --lengths 65536,262144 --methods bm25,s3,hybrid --out "$R/scale-64k-vs-256k-same-needles"
python bench/bench_retrieval.py --answer-questions 0 --out "$R/bench/retrieval-reads.json"
