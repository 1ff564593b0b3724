#!/usr/bin/env bash
# The README's held-out evaluation (issue 14): seed 100, budget 1024, 16k / 32k / 64k tokens, every task family,
# retrieval only (evidence recall), then the query-site rows on the same cached indexes.
#   bash bench/heldout.sh OUT [LENGTHS]       e.g. bash bench/heldout.sh docs/results/heldout 16384,32768,65536
set -euo pipefail
OUT=${1:-runs/heldout}
LENGTHS=${2:-16384,32768,65536}
CACHE=${CACHE:-runs/icache}
C="--lengths $LENGTHS --seeds 100 --budget 1024 --no-progress --index-cache $CACHE ${EXTRA:-}"
GEN=${GEN:---no-generate}
s3-eval --tasks literal_niah,paraphrase_niah,paraphrase_multikey --samples 10 --methods bm25,s3,hybrid $GEN $C --out "$OUT/niah"
s3-eval --tasks drop_qa --samples 8 --methods bm25,s3,hybrid $GEN $C --out "$OUT/drop"
s3-eval --tasks niah,multidoc_qa,ruler_vt --samples 1 --depths 50 --methods bm25,s3,hybrid $GEN $C --out "$OUT/other"
for site in query both; do
  s3-eval --tasks literal_niah,paraphrase_niah,paraphrase_multikey --samples 10 --methods s3 --site $site --no-generate $C --out "$OUT/site-$site/niah"
  s3-eval --tasks drop_qa --samples 8 --methods s3 --site $site --no-generate $C --out "$OUT/site-$site/drop"
  s3-eval --tasks niah,multidoc_qa,ruler_vt --samples 1 --depths 50 --methods s3 --site $site --no-generate $C --out "$OUT/site-$site/other"
done
