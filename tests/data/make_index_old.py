"""How ``tests/data/index_v<N>`` (an index of format_version N) and ``index_v<N>_expected.npz`` were made:
``index_v2`` (format 2: lists in position order) and ``index_v3`` (format 3: lists in impact tiers, the
documents table in the segment attributes' JSON).

Run it against the code of format N (git commit 600ce2c for 2, 92ec3fc for 3), not the current one::

    mkdir -p /tmp/idx-v2 && git archive 600ce2c | tar -x -C /tmp/idx-v2
    for d in models saes train index_builder retrieval evaluation configs checkpoints integrations; do
        ln -s ../$d /tmp/idx-v2/s3attn/$d; done
    PYTHONPATH=/tmp/idx-v2 python3 tests/data/make_index_old.py /tmp/idx-v2/tests tests/data 2

(the script was ``make_index_v2.py`` then; format 3's run also records the documents table.)

The tiny random Llama and SAE release of ``make_index_v1.py`` (seed 0), three documents (~300 tokens, so
that lists hold several postings), chunk 16, overlap 4, segments of 64 tokens, no merge, BM25 files left
out. The expected values are what the format-2 reader returned: every head's postings of all features
(positions, feature slots, activations) and document frequencies.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

OLD_TESTS, DATA, VERSION = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, str(OLD_TESTS))

from conftest import save_tiny_model_dir  # noqa: E402

import s3attn.index_builder.reader as reader_mod  # noqa: E402
from s3attn.constants import INDEX_FORMAT_VERSION  # noqa: E402
from s3attn.index_builder.cli import main  # noqa: E402
from s3attn.models.loading import load_model  # noqa: E402
from s3attn.saes import SaeConfig, SaeMeta, TopKSAE, write_release  # noqa: E402

assert INDEX_FORMAT_VERSION == VERSION, (
    f"run this with the code of format {VERSION}, not {reader_mod.__file__}"
)
LAYERS, F, K = [1, 3], 64, 4
TEXTS = {
    "a.txt": "the river of paris is old and the city is big, the bridge is long and the water is cold\n" * 2,
    "b.md": " ".join(["the king and the queen of the north", "went to the mountain by the water"] * 5) + "\n",
    "c.txt": "a quiet village by the sea keeps its boats in the harbour until the storm has passed\n" * 2,
}


def release(out: Path, model_id: str) -> Path:
    torch.manual_seed(0)
    saes = {layer: TopKSAE(SaeConfig(d_in=16, num_latents=F, k=K)) for layer in LAYERS}
    metas = {
        layer: SaeMeta(model_id=model_id, layer=layer, sites=("k", "q"), head_dim=16) for layer in LAYERS
    }
    info = {"model_id": model_id, "dataset": "tiny", "dataset_license": "n/a", "context_length": 32}
    return write_release(out, saes, metas, {**info, "name": "tiny-rel"})


def main_() -> None:
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp())
    model = save_tiny_model_dir(work / "m", "llama")
    loaded = load_model(str(model))
    rel = release(work / "rel", loaded.model_id)
    corpus = work / "corpus"
    corpus.mkdir()
    for name, text in TEXTS.items():
        (corpus / name).write_text(text)
    index = work / "index"
    args = ["build", str(corpus), "--out", str(index), "--sae", str(rel), "--model", str(model)]
    args += [
        "--chunk",
        "16",
        "--overlap",
        "4",
        "--segment-tokens",
        "64",
        "--merge-tier",
        "0",
        "--no-progress",
    ]
    assert main(args) == 0
    arrays: dict[str, np.ndarray] = {}
    with reader_mod.IndexReader.open(index) as st:
        assert st.verify() == [] and st.format_version == VERSION
        for layer, h in st.heads:
            post = st.postings(layer, h, np.arange(F))
            arrays[f"positions_{layer}_{h}"] = post.positions
            arrays[f"feature_slot_{layer}_{h}"] = post.feature_slot
            arrays[f"acts_{layer}_{h}"] = post.acts
            arrays[f"doc_freq_{layer}_{h}"] = st.doc_freq(layer, h)
        arrays["tokens"] = st.tokens(0, st.num_tokens)
        info = {"segments": [s.name for s in st.segments], "num_latents": F, "k": K}
        if VERSION >= 3:
            info["documents"] = [list(d) for d in st.documents()]
    dest = DATA / f"index_v{VERSION}"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(index, dest, ignore=shutil.ignore_patterns("index.lock", "bm25", "bm25.json"))
    np.savez_compressed(DATA / f"index_v{VERSION}_expected.npz", info=np.array(json.dumps(info)), **arrays)
    shutil.rmtree(work)


if __name__ == "__main__":
    main_()
