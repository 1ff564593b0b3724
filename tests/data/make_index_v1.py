"""How ``tests/data/index_v1`` (an index of format_version 1) and ``index_v1_expected.json`` were made.

Run it against the code of the previous format (git commit 68a8fe4), not the current one::

    git worktree add /tmp/idx-v1 68a8fe4
    mkdir -p /tmp/idx-v1-pkg/s3attn && cp /tmp/idx-v1/s3attn/*.py /tmp/idx-v1-pkg/s3attn/
    for d in models saes train index_builder retrieval evaluation configs checkpoints; do
        ln -s /tmp/idx-v1/$d /tmp/idx-v1-pkg/s3attn/$d; done
    PYTHONPATH=/tmp/idx-v1-pkg python3 tests/data/make_index_v1.py /tmp/idx-v1/tests tests/data

A tiny random Llama and a tiny SAE release (seed 0, as in tests/conftest.py and tests/test_index_build.py),
two documents, chunk 16, overlap 4, segments of 32 tokens (the second document is written in two pieces,
the first flagged ``open_doc``), no merge. BM25 files are left out (not part of this test). The expected
values are what the previous reader returned, checked here against codes encoded directly.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

OLD_TESTS, DATA = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(OLD_TESTS))

from conftest import save_tiny_model_dir  # noqa: E402

import s3attn.index_builder.store as store_mod  # noqa: E402
from s3attn.index_builder.cli import main  # noqa: E402
from s3attn.index_builder.prefill import encode_chunk, iter_doc_chunks  # noqa: E402
from s3attn.models.loading import load_model  # noqa: E402
from s3attn.saes import SaeConfig, SaeMeta, TopKSAE, load_many, write_release  # noqa: E402

assert "idx-v1" in store_mod.__file__, (
    f"run this with the previous code on PYTHONPATH, not {store_mod.__file__}"
)
LAYERS, F, K = [1, 3], 64, 4
TEXTS = {
    "a.txt": "the river of paris is old and the city is big\n",
    "b.md": " ".join(["the king and the queen of the north", "went to the mountain by the water"] * 3) + "\n",
}


def release(out: Path, model_id: str) -> Path:
    torch.manual_seed(0)
    saes = {layer: TopKSAE(SaeConfig(d_in=16, num_latents=F, k=K)) for layer in LAYERS}
    metas = {
        layer: SaeMeta(model_id=model_id, layer=layer, sites=("k", "q"), head_dim=16) for layer in LAYERS
    }
    info = {"model_id": model_id, "dataset": "tiny", "dataset_license": "n/a", "context_length": 32}
    return write_release(out, saes, metas, {**info, "name": "tiny-rel"})


def direct_postings(loaded, rel: Path, ids: dict[str, list[int]], starts: dict[str, int]) -> dict:
    """(layer, head) -> feature -> sorted global positions, from codes encoded here (not from the index)."""
    saes = load_many(rel)
    out: dict = {}
    for path, toks in ids.items():
        for chunk in iter_doc_chunks(0, iter([toks]), 16, 4):
            cc = encode_chunk(loaded.model, saes, chunk)
            for (layer, h), (idx, _acts) in cc.codes.items():
                for t, row in enumerate(np.asarray(idx).astype(np.int64)):
                    for f in row.tolist():
                        out.setdefault(f"{layer},{h}", {}).setdefault(f, []).append(
                            starts[path] + chunk.start + t
                        )
    return {key: {f: sorted(p) for f, p in feats.items()} for key, feats in out.items()}


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
        "32",
        "--merge-tier",
        "0",
        "--no-progress",
    ]
    assert main(args) == 0
    with store_mod.IndexStore.open(index) as st:
        assert st.verify() == []
        path_of = {d.doc_id: d.path for d in st.documents()}
        ranges = {path_of[i]: (i, s, e) for i, s, e in store_mod.doc_ranges(st)}
        ids = {p: loaded.tokenizer(t, add_special_tokens=False)["input_ids"] for p, t in TEXTS.items()}
        direct = direct_postings(loaded, rel, ids, {p: r[1] for p, r in ranges.items()})
        heads = {}
        for layer, h in st.heads:
            post = st.postings(layer, h, np.arange(F))
            heads[f"{layer},{h}"] = {
                "positions": post.positions.tolist(),
                "feature_slot": post.feature_slot.tolist(),
                "acts": post.acts.tolist(),
            }
            for f in range(F):  # the previous reader agrees with the codes themselves
                got = post.positions[post.feature_slot == f].tolist()
                assert got == direct[f"{layer},{h}"].get(f, []), (layer, h, f)
        expected = {
            "format_version": json.loads((index / "manifest.json").read_text())["format_version"],
            "documents": [list(d) for d in st.documents()],
            "doc_ranges": [list(r) for r in store_mod.doc_ranges(st)],
            "tokens": st.tokens(0, st.num_tokens).tolist(),
            "token_ids_by_path": ids,
            "segments": [s["name"] for s in st.segments],
            "open_doc": [s["open_doc"] for s in st.segments],
            "num_latents": F,
            "k": K,
            "heads": heads,
        }
    dest = DATA / "index_v1"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(index, dest, ignore=shutil.ignore_patterns("index.lock", "bm25", "bm25.json"))
    (DATA / "index_v1_expected.json").write_text(json.dumps(expected, separators=(",", ":")) + "\n")
    shutil.rmtree(work)


if __name__ == "__main__":
    main_()
