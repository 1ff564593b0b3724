"""Which precision the SAE encode should run in when the model runs in bfloat16.

On held-out text (Paul Graham's essays: evaluation text, never trained on), SmolLM2's key vectors of every
SAE layer are taken once from the float32 model and once from the bfloat16 model, and encoded:

- ``ref``: float32 model, float32 SAE (the codes of an fp32 build);
- ``a``: bfloat16 model, float32 SAE on the bf16 vectors cast to float32 (what the code does);
- ``b``: bfloat16 model, SAE cast to bfloat16 on the bf16 vectors;
- ``c``: float32 model, SAE cast to bfloat16 (the SAE's own share of ``b``'s error).

Per layer it prints the top-k agreement with ``ref`` (mean |top-k ∩ ref top-k| / k over every (token, KV
head)), the share of vectors whose top-k set is exactly ``ref``'s, and the mean relative error of the
activations of the features both keep.

    python bench/bench_precision_sae.py [--tokens 2048] [--chunk 512] [--skip 0]
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from s3attn.evaluation.tasks import paul_graham_text
from s3attn.models.loading import load_model
from s3attn.models.taps import tap_heads
from s3attn.saes.checkpoint import load_many
from s3attn.saes.stack import default_release

OUT = Path(__file__).parent / "out" / "precision_sae.json"


@torch.no_grad()
def keys_by_layer(model, ids: torch.Tensor, layers: list[int], chunk: int) -> dict[int, torch.Tensor]:
    """[N, D] key vectors per layer (every token x KV head), in the model's dtype, chunk by chunk."""
    parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, ids.numel(), chunk):
        taps = tap_heads(model, ids[None, start : start + chunk], layers, sites=("k",))
        for layer in layers:
            parts[layer].append(rearrange(taps.keys[layer][0], "t h d -> (t h) d"))
    return {layer: torch.cat(p) for layer, p in parts.items()}


@torch.no_grad()
def codes(sae, x_ND: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    enc = sae.encode(x_ND.to(sae.dtype))
    return enc.top_indices.cpu().numpy(), enc.top_acts.float().cpu().numpy()


def agreement(ref: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    (ri, ra), (gi, ga) = ref, got
    k = ri.shape[1]
    overlap, exact, rel = [], 0, []
    for n in range(ri.shape[0]):
        ref_acts = dict(zip(ri[n].tolist(), ra[n].tolist()))
        got_acts = dict(zip(gi[n].tolist(), ga[n].tolist()))
        both = ref_acts.keys() & got_acts.keys()
        overlap.append(len(both) / k)
        exact += len(both) == k
        rel += [abs(got_acts[f] - ref_acts[f]) / max(abs(ref_acts[f]), 1e-6) for f in both]
    return {
        "topk_agreement": float(np.mean(overlap)),
        "exact_sets": exact / ri.shape[0],
        "act_rel_err": float(np.mean(rel)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--chunk", type=int, default=512, help="tokens per forward (the training context)")
    ap.add_argument("--skip", type=int, default=0, help="characters of the essays to skip first")
    args = ap.parse_args()
    torch.manual_seed(0)
    fp32 = load_model(dtype=torch.float32)
    bf16 = load_model(dtype=torch.bfloat16)
    text = paul_graham_text()[args.skip :]
    ids = torch.tensor(fp32.tokenizer(text[: args.tokens * 8], add_special_tokens=False)["input_ids"])
    ids = ids[: args.tokens]
    saes = load_many(default_release())
    layers = sorted(saes)
    keys32 = keys_by_layer(fp32.model, ids, layers, args.chunk)
    keys16 = keys_by_layer(bf16.model, ids, layers, args.chunk)
    result: dict[str, dict] = {}
    print(
        f"{ids.numel()} tokens of Paul Graham essays, chunks of {args.chunk}; agreement with fp32 model+SAE"
    )
    print(f"{'layer':>5} {'variant':<34} {'top-k agree':>11} {'exact sets':>10} {'act rel err':>11}")
    for layer in layers:
        sae32 = saes[layer].float()
        sae16 = copy.deepcopy(sae32).to(torch.bfloat16)
        ref = codes(sae32, keys32[layer])
        variants = {
            "a: bf16 model, fp32 SAE": codes(sae32, keys16[layer].float()),
            "b: bf16 model, bf16 SAE": codes(sae16, keys16[layer]),
            "c: fp32 model, bf16 SAE": codes(sae16, keys32[layer]),
        }
        result[str(layer)] = {}
        for name, got in variants.items():
            m = agreement(ref, got)
            result[str(layer)][name] = m
            print(
                f"{layer:>5} {name:<34} {m['topk_agreement']:>11.4f} {m['exact_sets']:>10.4f} "
                f"{m['act_rel_err']:>11.4f}"
            )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"tokens": int(ids.numel()), "chunk": args.chunk, "layers": result}, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
