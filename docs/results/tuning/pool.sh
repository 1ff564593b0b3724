set -x
B="--budget 1024 --index-cache runs/icache --s3-pool 3"
L="--lengths 32768,65536"
python bench/rerank_likelihood.py --tasks paraphrase_niah,paraphrase_multikey --samples 5 --seeds 0,1,2,3 $L $B --cache runs/tune/pool-para.pkl
python bench/rerank_likelihood.py --tasks drop_qa --samples 4 --seeds 0,1,2,3 $L $B --cache runs/tune/pool-drop.pkl
python bench/rerank_likelihood.py --tasks literal_niah,ruler_vt --samples 3 --seeds 0,1 $L $B --cache runs/tune/pool-other.pkl
