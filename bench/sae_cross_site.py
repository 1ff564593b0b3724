"""A try for the paper's query site (issue 14, target 5): the **SAE itself** fine-tuned with a cross-site
objective, so that a question token's query code shares latents with the code of the evidence key it attends
to, and the question's raw query vectors (the paper's way, no query map) find the key postings.

Per published layer, the SAE starts from the release and is trained further on two batches per step:

- reconstruction, as it was trained: keys and queries (half each) of ``--contexts`` contexts of the training
  text, the SAE's FVU;
- cross-site: the question / evidence pairs of ``bench/query_map_evidence.py`` (the model wrote a question for
  one training-text sentence; never the evaluation essays). For each question token (the question coded alone,
  as retrieval does) and query head, the evidence key the model's retrieval heads ``--guide`` attend to most
  with the context before the question. Loss: the cross-entropy between the softmax of the query's encoder
  pre-activations (``/ --temperature``) and that key's current top-k code (activation x IDF^``--idf-power``,
  normalised; IDF from the keys of the reconstruction text).

``loss = FVU + --cross x cross-entropy``; Adam, the decoder rows kept at unit norm. The last ``--holdout``
pairs and a quarter more contexts are held out; it prints per layer, before and after: the held-out code
overlap (IDF-weighted share of the query's top-k latents that its evidence key's code holds), the held-out
FVU of keys and of queries, and how many of a held-out key's latents stay the same (the key site reads
them). It writes a release (``--out``) with the same format, model card and sparsify layout as the
published one; indexes must be built with it (``--sae``).

    python bench/sae_cross_site.py --objective contrast --cross 0.3 --batch 1024 --out runs/sae_cross/contrast
    python bench/eval_fusions.py --sae runs/sae_cross/contrast --variants s3.query,s3,s3.query.evguide \\
        --expand none --tasks literal_niah,paraphrase_niah,paraphrase_multikey --samples 10 --seeds 0,1,2 \\
        --lengths 16384 --budget 1024 --index-cache runs/icache

(the query site's best so far, README "The SAE itself trained across sites"; the runs of every objective are
in ``docs/results/tuning/sae-cross-site-niah``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from query_map_evidence import pair_rows, parse_guide
from tqdm import tqdm

from s3attn.constants import QUERY_MAP_FILE
from s3attn.corpus import Corpus
from s3attn.models.precision import resolve_dtype
from s3attn.models.taps import tap_heads
from s3attn.saes.checkpoint import load_many, read_release_config, write_release
from s3attn.saes.sae import TopKSAE
from s3attn.saes.stack import load_stack, resolve_release
from s3attn.train.query_map import sample_contexts

Rows = dict[int, tuple[torch.Tensor, torch.Tensor]]  # layer -> (first [N, D], second [N, D])


def cross_rows(model, tok, layers: list[int], pairs: list[dict], guide) -> Rows:
    """Per layer: (question query rows [N, D], the guided evidence key of each [N, D]), heads flattened."""
    acc: dict[int, list[list[torch.Tensor]]] = {layer: [[], []] for layer in layers}
    for pair in tqdm(pairs, desc="pairs", unit="pair"):
        got = pair_rows(model, tok, layers, pair, "argmax", guide)
        for layer, (q_THD, y_THD, _) in (got[0] if got else {}).items():
            acc[layer][0].append(q_THD.reshape(-1, q_THD.shape[-1]))
            acc[layer][1].append(y_THD.reshape(-1, y_THD.shape[-1]))
    return {layer: (torch.cat(q), torch.cat(k)) for layer, (q, k) in acc.items()}


@torch.no_grad()
def text_rows(model, contexts: list[torch.Tensor], layers: list[int]) -> Rows:
    """Per layer: (keys [N, D], as many queries drawn from every query head [N, D]) of ``contexts``."""
    acc: dict[int, list[list[torch.Tensor]]] = {layer: [[], []] for layer in layers}
    gen = torch.Generator().manual_seed(0)
    for ids in tqdm(contexts, desc="text", unit="ctx"):
        taps = tap_heads(model, ids[None].to(model.device), layers)
        for layer in layers:
            k = taps.keys[layer][0].float().cpu().reshape(-1, taps.keys[layer].shape[-1])
            q = taps.queries[layer][0].float().cpu().reshape(-1, k.shape[-1])
            acc[layer][0].append(k)
            acc[layer][1].append(q[torch.randperm(q.shape[0], generator=gen)[: k.shape[0]]])
    return {layer: (torch.cat(k), torch.cat(q)) for layer, (k, q) in acc.items()}


@torch.no_grad()
def latent_counts(sae: TopKSAE, x_ND: torch.Tensor) -> torch.Tensor:
    """[latents]: how many of the rows' codes hold each latent."""
    return torch.bincount(sae.encode(x_ND).top_indices.reshape(-1), minlength=sae.cfg.num_latents)


def key_idf(sae: TopKSAE, keys_ND: torch.Tensor) -> torch.Tensor:
    return 1.0 / (torch.log1p(latent_counts(sae, keys_ND).float()) + 1.0)


def preacts(sae: TopKSAE, x_ND: torch.Tensor) -> torch.Tensor:
    return (x_ND - sae.b_dec) @ sae.encoder.weight.T + sae.encoder.bias


@torch.no_grad()
def key_codes(sae: TopKSAE, k_ND: torch.Tensor, idf: torch.Tensor, power: float):
    """(weights [N, k] summing to 1: activation x IDF^power, latent ids [N, k]) of the keys' codes."""
    e = sae.encode(k_ND)
    w = e.top_acts.float() * idf[e.top_indices] ** power
    return w / w.sum(1, keepdim=True).clamp_min(1e-9), e.top_indices


def cross_loss(sae: TopKSAE, q_ND, k_ND, idf, args) -> torch.Tensor:
    """``code``: each query toward its own key's code; ``contrast``: the same score, softmaxed over the
    batch's keys, so a query's code must pick its own evidence key out of the others (in-batch negatives)."""
    w, ids = key_codes(sae, k_ND, idf, args.idf_power)
    logp_NL = torch.log_softmax(preacts(sae, q_ND) / args.temperature, -1)
    if args.objective == "code":
        return -(w * logp_NL.gather(-1, ids)).sum(-1).mean()
    w_NL = torch.zeros_like(logp_NL).scatter_(-1, ids, w)
    score_NN = logp_NL @ w_NL.T
    return torch.nn.functional.cross_entropy(score_NN, torch.arange(q_ND.shape[0], device=q_ND.device))


@torch.no_grad()
def report(sae: TopKSAE, held_cross, held_text, idf, keys_before: torch.Tensor) -> dict:
    """Held-out code overlap, FVU of keys / queries, share of key latents unchanged."""
    q, k = held_cross
    top = sae.encode(q).top_indices
    _, ids = key_codes(sae, k, idf, 1.0)
    hit = (top[..., None] == ids[..., None, :]).any(-1).float()
    overlap = float(((hit * idf[top]).sum(-1) / idf[top].sum(-1)).mean())
    now = sae.encode(held_text[0]).top_indices
    same = float((now[..., None] == keys_before[..., None, :]).any(-1).float().mean())
    fvu = [float(sae(x).fvu) for x in held_text]
    return {"overlap": overlap, "fvu_keys": fvu[0], "fvu_queries": fvu[1], "key_latents_kept": same}


def fine_tune(sae: TopKSAE, text: tuple, cross: tuple, idf, args) -> None:
    opt = torch.optim.Adam(sae.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    mix = torch.cat(text)
    for _ in tqdm(range(args.steps), desc="steps", unit="step", leave=False):
        i = torch.randint(0, mix.shape[0], (args.batch,), generator=gen)
        j = torch.randint(0, cross[0].shape[0], (args.batch,), generator=gen)
        loss = sae(mix[i]).fvu + args.cross * cross_loss(sae, cross[0][j], cross[1][j], idf, args)
        opt.zero_grad()
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        sae.set_decoder_norm_to_unit_norm()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--release", default="checkpoints/smollm2-135m-k32")
    ap.add_argument("--corpus", default="corpora/public-domain", help="training text (never evaluation text)")
    ap.add_argument("--pairs-file", default="runs/query_map/evidence-pairs.json")
    ap.add_argument("--pairs", type=int, default=480, help="pairs used, the last --holdout of them held out")
    ap.add_argument("--holdout", type=int, default=80)
    ap.add_argument("--guide", default="18:7,17:3,14:3,18:6")
    ap.add_argument("--contexts", type=int, default=40, help="contexts of 512 tokens for reconstruction")
    ap.add_argument("--cross", type=float, default=1.0, help="weight of the cross-site loss")
    ap.add_argument("--objective", choices=("code", "contrast"), default="code", help="see cross_loss")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--idf-power", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows-cache", default="runs/sae_cross/rows.pt", help="harvested rows (reused)")
    ap.add_argument("--out", default="runs/sae_cross/release")
    ap.add_argument(
        "--query-map", default="", help=f"a query map file shipped in the release as {QUERY_MAP_FILE}"
    )
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rel = resolve_release(args.release, None)
    cache = Path(args.rows_cache)
    if cache.is_file():
        rows = torch.load(cache)
    else:
        stack = load_stack(rel.path, rel.config, rel.layers, None, dtype=resolve_dtype("auto", "cpu"))
        model, tok = stack.loaded.model, stack.loaded.tokenizer
        pairs = json.loads(Path(args.pairs_file).read_text())[: args.pairs]
        ctxs = sample_contexts(Corpus(args.corpus, option="--corpus"), tok, args.contexts * 5 // 4, 512)
        guide, cut = parse_guide(args.guide), len(pairs) - args.holdout
        rows = {
            "cross": cross_rows(model, tok, rel.layers, pairs[:cut], guide),
            "held_cross": cross_rows(model, tok, rel.layers, pairs[cut:], guide),
            "text": text_rows(model, ctxs[: args.contexts], rel.layers),
            "held_text": text_rows(model, ctxs[args.contexts :], rel.layers),
        }
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(rows, cache)
    saes = load_many(rel.path, layers=rel.layers, dtype=torch.float32)
    t0, fit = time.perf_counter(), {}
    for layer, sae in saes.items():
        idf = key_idf(sae, rows["text"][layer][0])
        keys_before = sae.encode(rows["held_text"][layer][0]).top_indices
        before = report(sae, rows["held_cross"][layer], rows["held_text"][layer], idf, keys_before)
        fine_tune(sae, rows["text"][layer], rows["cross"][layer], idf, args)
        after = report(sae, rows["held_cross"][layer], rows["held_text"][layer], idf, keys_before)
        fit[layer] = {"before": before, "after": after}
        print(f"layer {layer} ({rows['cross'][layer][0].shape[0]} cross rows): "
              + ", ".join(f"{n} {before[n]:.3f} -> {after[n]:.3f}" for n in before), flush=True)  # fmt: skip
    write_cross_release(args, rel.path, saes, fit, rows["held_text"])
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s")


def dead_fraction(sae: TopKSAE, held_text: tuple) -> float:
    """Share of latents that fire on none of the held-out keys and queries."""
    return float((latent_counts(sae, torch.cat(held_text)) == 0).float().mean())


def write_cross_release(args, base: Path, saes: dict, fit: dict, held_text: dict) -> None:
    """The fine-tuned SAEs as a release: the base's config less its stale hold-out figures, plus
    ``cross_site`` (options and fit); per layer the held-out FVU of keys and the dead fraction measured
    here; ``--query-map`` shipped as the release's query map; a model-card section on how it was made."""
    info = {k: v for k, v in read_release_config(base).items() if k != "holdout"}
    info["cross_site"] = {**vars(args), "fit": fit}
    metas = {
        layer: replace(
            sae.meta, fvu=fit[layer]["after"]["fvu_keys"], dead_fraction=dead_fraction(sae, held_text[layer])
        )
        for layer, sae in saes.items()
    }
    notes = [
        "## Cross-site fine-tune",
        "",
        f"The SAEs of `{base.name}` trained further for the paper's query site (`bench/sae_cross_site.py`, objective "
        f"`{args.objective}`, weight {args.cross}, {args.steps} steps of Adam, lr {args.lr}, batch {args.batch}): "
        "reconstruction of keys and queries of the training text, plus a loss that makes a question token's "
        "query code hold the latents of the evidence key the model's retrieval heads "
        f"({args.guide}) attend to, on question / evidence pairs the model wrote from the training text. FVU "
        "above: held-out keys after the fine-tune; dead fraction: on held-out keys and queries. config.json "
        '"cross_site" holds every option and the held-out fit (code overlap, FVU, key latents kept).',
        "",
        *(f"- layer {layer}: " + ", ".join(f"{n} {f['before'][n]:.3f} -> {f['after'][n]:.3f}" for n in f["before"])
          for layer, f in fit.items()),
    ]  # fmt: skip
    extra = {}
    if args.query_map:
        extra[QUERY_MAP_FILE] = Path(args.query_map)
        notes += ["", f"`{QUERY_MAP_FILE}`: the query map to code questions with (`--query-map release`), "
                  f"from `{args.query_map}`."]  # fmt: skip
    write_release(args.out, saes, metas, info, card_notes="\n".join(notes), extra_files=extra)


if __name__ == "__main__":
    main()
