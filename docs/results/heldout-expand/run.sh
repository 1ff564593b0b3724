# Held-out runs (seed 100, budget 1024, retrieval only) with question expansion (expand both: the question,
# then the passage the model writes for it, is coded; the default since this run's commit): S3 alone and the
# likelihood hybrid (pool 3); bm25 does not depend on S3: its rows are heldout-likelihood's. The same samples
# without expansion are heldout-saturation's.
set -x
R=docs/results/heldout-expand
for L in 65536 32768 16384; do
C="--lengths $L --seeds 100 --budget 1024 --no-progress --no-generate --index-cache runs/icache --methods s3,hybrid"
s3-eval --tasks literal_niah,paraphrase_niah,paraphrase_multikey --samples 10 $C --out $R/$L/niah
s3-eval --tasks drop_qa --samples 8 $C --out $R/$L/drop
s3-eval --tasks niah,multidoc_qa,ruler_vt --samples 1 --depths 50 $C --out $R/$L/other
done
