# Held-out runs of the likelihood hybrid with S3's candidates at 3 budgets (likelihood_pool 3, the default
# since this run's commit); s3 and bm25 do not depend on the fusion: their rows are heldout-likelihood's.
set -x
R=docs/results/heldout-pool
for L in 16384 32768 65536; do
C="--lengths $L --seeds 100 --budget 1024 --no-progress --no-generate --index-cache runs/icache --methods hybrid --fusion likelihood --likelihood-pool 3"
s3-eval --tasks literal_niah,paraphrase_niah,paraphrase_multikey --samples 10 $C --out $R/$L/niah
s3-eval --tasks drop_qa --samples 8 $C --out $R/$L/drop
s3-eval --tasks niah,multidoc_qa,ruler_vt --samples 1 --depths 50 $C --out $R/$L/other
done
