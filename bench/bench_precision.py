"""Fidelity of a bf16 (and fp16) index build: top-k SAE feature agreement with fp32, per layer.

    python bench/bench_precision.py [--sae checkpoints/smollm2-135m-k32] [--tokens 8192] [--dtypes bfloat16,float16]

On held-out text (Paul Graham's essays: evaluation text, never trained on), the key vectors an index stores
are taken from the model loaded in float32 (the reference) and in each of ``--dtypes``, over the chunks an
index build uses (``--chunk`` 2048 tokens with ``--overlap`` 64 tokens of left context whose codes are
dropped). The SAE stays float32 and is fed each model's keys cast to float32 (what the build does).

Per layer: agreement = mean over (token, KV head) of |top-k set ∩ fp32 top-k set| / k; the share of
(token, head) whose top-k set is exactly fp32's; the worst head's agreement; the mean relative error of
the key vectors (||k - k_fp32|| / ||k_fp32||) and of the activations of the features both keep.
Also the forward time per precision (the same chunks, one after the other, so only a rough side by side).
Writes bench/out/precision.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from s3attn.evaluation.tasks import paul_graham_text
from s3attn.index_builder.prefill import plan_chunks
from s3attn.models.loading import load_model
from s3attn.models.taps import tap_heads
from s3attn.saes.stack import default_release, load_stack, model_name_for, resolve_release

OUT = Path(__file__).parent / "out" / "precision.json"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def chunk_keys(model, ids: torch.Tensor, plan, layers: list[int]) -> tuple[dict[int, torch.Tensor], float]:
    """Per layer, float32 keys [T, H_kv, D] of every new token of every chunk (context tokens dropped), and
    the seconds the forwards took."""
    parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    seconds = 0.0
    for ctx_start, start, end in plan:
        t = time.perf_counter()
        taps = tap_heads(model, ids[None, ctx_start:end], layers, sites=("k",))
        seconds += time.perf_counter() - t
        for layer in layers:
            parts[layer].append(taps.keys[layer][0, start - ctx_start :].float())
    return {layer: torch.cat(p) for layer, p in parts.items()}, seconds


@torch.no_grad()
def encode(sae, keys_THD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (indices, acts), each [T, H, k], of every (token, head) key vector (SAE in its own dtype)."""
    n_tok, n_heads, dim = keys_THD.shape
    enc = sae.encode(keys_THD.reshape(-1, dim).to(sae.dtype))
    shape = (n_tok, n_heads, -1)
    return enc.top_indices.reshape(shape), enc.top_acts.float().reshape(shape)


def compare(ref: tuple[torch.Tensor, torch.Tensor], got: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """Agreement of two top-k codes [T, H, k] (as sets per token and head) and the activation error."""
    (ref_i, ref_a), (got_i, got_a) = ref, got
    match_THkk = got_i[..., :, None] == ref_i[..., None, :]  # got slot j == ref slot l
    shared_THk = match_THkk.any(-1)
    k = ref_i.shape[-1]
    agree_TH = shared_THk.sum(-1).float() / k
    ref_a_of_got = (match_THkk.float() * ref_a[..., None, :]).sum(-1)  # ref act of the same feature
    rel = (got_a - ref_a_of_got).abs() / ref_a_of_got.abs().clamp_min(1e-6)
    return {
        "agreement": float(agree_TH.mean()),
        "exact_set_share": float((agree_TH == 1).float().mean()),
        "agreement_by_head": [float(x) for x in agree_TH.mean(0)],
        "act_rel_err_shared": float(rel[shared_THk].mean()),
    }


def key_rel_err(ref_THD: torch.Tensor, got_THD: torch.Tensor) -> float:
    return float(((got_THD - ref_THD).norm(dim=-1) / ref_THD.norm(dim=-1).clamp_min(1e-6)).mean())


def measure(args: argparse.Namespace) -> dict:
    release, rel_cfg, layers = resolve_release(args.sae or str(default_release()), None)
    ref_stack = load_stack(release, rel_cfg, layers, None)  # float32 model, float32 SAEs
    loaded, saes = ref_stack.loaded, ref_stack.saes
    ids_all = loaded.tokenizer(paul_graham_text(), add_special_tokens=False)["input_ids"]
    ids = torch.tensor(ids_all[args.skip : args.skip + args.tokens])
    plan = plan_chunks(len(ids), args.chunk, args.overlap)
    tap_heads(loaded.model, ids[None, :64], layers, sites=("k",))  # warm-up
    ref_keys, ref_s = chunk_keys(loaded.model, ids, plan, layers)
    ref_codes = {layer: encode(saes[layer], ref_keys[layer]) for layer in layers}
    res: dict = {
        "tokens": len(ids),
        "text": f"Paul Graham essays, tokens {args.skip}..{args.skip + len(ids)}",
        "chunk": args.chunk,
        "overlap": args.overlap,
        "layers": layers,
        "k": int(saes[layers[0]].cfg.k),
        "threads": torch.get_num_threads(),
        "forward_tokens_per_s": {"float32": len(ids) / ref_s},
        "by_dtype": {},
    }
    for name in args.dtypes.split(","):
        model = load_model(model_name_for(rel_cfg["model_id"]), dtype=DTYPES[name]).model
        tap_heads(model, ids[None, :64], layers, sites=("k",))  # warm-up
        keys, secs = chunk_keys(model, ids, plan, layers)
        del model
        res["forward_tokens_per_s"][name] = len(ids) / secs
        res["by_dtype"][name] = {
            layer: {
                **compare(ref_codes[layer], encode(saes[layer], keys[layer])),
                "key_rel_err": key_rel_err(ref_keys[layer], keys[layer]),
            }
            for layer in layers
        }
    return res


def print_table(res: dict) -> None:
    print(
        f"top-k agreement with fp32 over {res['tokens']} tokens ({res['text']}), k={res['k']}, "
        f"{res['chunk']}-token chunks; SAE in fp32 fed each model's keys cast to fp32"
    )
    print(
        f"{'dtype':<9} {'layer':>5} {'agreement':>9} {'exact set':>9} {'worst head':>10} "
        f"{'key rel err':>11} {'act rel err':>11}"
    )
    for name, by_layer in res["by_dtype"].items():
        for layer, r in by_layer.items():
            print(
                f"{name:<9} {layer:>5} {r['agreement']:>9.4f} {r['exact_set_share']:>9.4f} "
                f"{min(r['agreement_by_head']):>10.4f} {r['key_rel_err']:>11.2e} {r['act_rel_err_shared']:>11.2e}"
            )
    fwd = res["forward_tokens_per_s"]
    print("forward to the deepest layer, tok/s: " + ", ".join(f"{k} {v:.0f}" for k, v in fwd.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sae", default=None)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--skip", type=int, default=0, help="start this many tokens into the essays")
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--dtypes", default="bfloat16,float16", help=f"compared with float32; of {list(DTYPES)}")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    res = measure(args)
    print_table(res)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
