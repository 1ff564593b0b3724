"""A try for the paper's query site (issue 14, target 5): a query map fitted on **question-to-evidence**
attention instead of running text.

``s3-train-sae query-map`` fits its ridge map on running text: each query vector against the key the model's
attention gives it there. Retrieval needs something else: a question's query vectors against the keys of the
passage that answers it. This script makes such pairs from the training text (never the evaluation essays):
it cuts contexts of ``--context-length`` tokens, picks one sentence in the middle half of each (the
evidence), and lets the index's model write a question that the sentence answers (few-shot, plain text);
the pairs are kept in ``--pairs-file`` and reused. It then runs the model over the context followed by the
question (the answering prompt) and, per layer and query head, takes for every question token the evidence
key that head attends to most (``--target argmax``) or the attention-weighted mean key of the evidence
(``mean``). With ``--guide L:H,...`` the attention that picks the evidence token is the mean of those heads
(the model's retrieval heads, e.g. 18:7,17:3,14:3,18:6), for every layer and head: at the indexed layers
the heads' own attention does not find the evidence. The map's input is the question's query vector as
retrieval computes it: the question in the prompt without a context. Weighted ridge (``--weight one`` or
``mass``, the share of the row's attention on the evidence), closed form, as ``train.query_map``. It prints
the pairs used and, per layer, the question rows' attention share on the evidence against the evidence's
share of the context (chance), and writes a query map file that ``--site query --query-map`` reads.

    python bench/query_map_evidence.py --pairs 160 --out runs/query_map/query_map-evidence-own.safetensors
    python bench/query_map_evidence.py --pairs 160 --guide 18:7,17:3,14:3,18:6 \\
        --out runs/query_map/query_map-evidence-guide.safetensors
    python bench/eval_fusions.py --variants s3,s3.query,s3.query.argmax64,s3.query.evown,s3.query.evguide \\
        --expand none --tasks literal_niah,paraphrase_niah,paraphrase_multikey --samples 10 --seeds 0,1,2 \\
        --lengths 16384 --budget 1024 --index-cache runs/icache
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import torch
from tqdm import tqdm

from s3attn.corpus import Corpus
from s3attn.models.precision import resolve_dtype
from s3attn.models.taps import attention_geometry, tap_heads
from s3attn.retrieval.generate import chat_prompt, generate
from s3attn.retrieval.question import question_token_range
from s3attn.saes.query_map import QueryMap
from s3attn.saes.stack import load_stack, resolve_release
from s3attn.train.query_map import NormalEquations, attention_weights, keys_attended, sample_contexts

FEW_SHOT = (  # plain few-shot text: the 135M model's chat turn mostly comments on the sentence instead
    "Sentence: The old miller sold his horse to pay the rent.\nQuestion: Why did the miller sell his horse?\n\n"
    "Sentence: In spring the river flooded the lower fields of the valley.\n"
    "Question: What happened to the lower fields in spring?\n\nSentence: {sentence}\nQuestion:"
)
COPIED = ("miller", "lower fields", "the answer", "the sentence")  # the examples' words, or no question
CONTEXTS = 700  # the public-domain corpus gives 764 contexts of 512 tokens
SENTENCE = re.compile(r"[^.!?]*[.!?]")


def evidence_sentence(text: str, rng: random.Random) -> str | None:
    """One sentence of 8-40 words starting in the middle half of ``text``, or None."""
    lo, hi = len(text) // 4, 3 * len(text) // 4
    cands = [
        m.group().strip()
        for m in SENTENCE.finditer(text)
        if lo <= m.start() < hi and 8 <= len(m.group().split()) <= 40
    ]
    return rng.choice(cands) if cands else None


def write_question(model, tokenizer, sentence: str) -> str | None:
    """The model's question for ``sentence`` (first line, ending in "?", none of ``COPIED``), or None."""
    text = generate(model, tokenizer, FEW_SHOT.format(sentence=sentence), 24)[0].strip().split("\n")[0]
    ok = text.endswith("?") and len(text.split()) >= 3 and not any(c in text.lower() for c in COPIED)
    return text.strip() if ok else None


def char_tokens(tokenizer, prompt: str, at: int, length: int) -> tuple[int, int]:
    """Token range of ``prompt[at : at + length]``."""
    offsets = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    toks = [i for i, (s, e) in enumerate(offsets) if e > at and s < at + length]
    return toks[0], toks[-1] + 1


def question_attention(model, taps, layer: int, q_lo: int, q_hi: int) -> torch.Tensor:
    """Attention [H_q, Tq, q_lo] of the question's rows (tokens ``q_lo:q_hi``) over the tokens before it,
    renormalised over those tokens."""
    geo = attention_geometry(model)
    q_THD, k_TGD = taps.queries[layer][0], taps.keys[layer][0]
    attn_HTS = attention_weights(model, q_THD, k_TGD, geo.kv_head_of_query, slice(q_lo, q_hi))[..., :q_lo]
    return attn_HTS / attn_HTS.sum(-1, keepdim=True)


def evidence_targets(model, taps, layer: int, attn_HTE: torch.Tensor, ev: tuple[int, int], target: str):
    """(target keys [Tq, H, D], attention share on the evidence [Tq, H]) of ``layer`` from the attention
    ``attn_HTE`` over the evidence tokens ``ev`` (one row of heads [1, Tq, E] is broadcast to every head)."""
    geo = attention_geometry(model)
    k_EHD = taps.keys[layer][0].float()[ev[0] : ev[1]][:, list(geo.kv_head_of_query)]
    return keys_attended(attn_HTE.expand(geo.num_heads, -1, -1), k_EHD, target)


@torch.no_grad()
def pair_rows(model, tokenizer, layers: list[int], pair: dict, target: str, guide: list[tuple[int, int]]):
    """Per layer: (query rows of the question alone [Tq, H, D], target keys [Tq, H, D], attention share on
    the evidence [Tq, H]), and the evidence's share of the context; None when the question's tokens differ
    between the two prompts. ``guide``: the evidence token each question token points at is chosen by the
    mean attention of these (layer, head)s, for every layer and head; else each head's own attention."""
    alone = chat_prompt(tokenizer, "", pair["question"])
    full = chat_prompt(tokenizer, pair["context"], pair["question"])
    a_lo, a_hi = question_token_range(tokenizer, alone, pair["question"])
    q_lo, q_hi = question_token_range(tokenizer, full, pair["question"])
    if a_hi - a_lo != q_hi - q_lo:
        return None
    ev = char_tokens(tokenizer, full, full.find(pair["sentence"]), len(pair["sentence"]))
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in (alone, full)]
    all_layers = sorted(set(layers) | {g for g, _ in guide})
    taps_a = tap_heads(model, torch.tensor(ids[0])[None].to(model.device), layers)
    taps_f = tap_heads(model, torch.tensor(ids[1])[None].to(model.device), all_layers)
    if guide:
        guided = [question_attention(model, taps_f, g, q_lo, q_hi)[h, :, ev[0] : ev[1]] for g, h in guide]
        guide_TE = torch.stack(guided).mean(0)[None]
    out = {}
    for layer in layers:
        attn_HTE = (
            guide_TE if guide else question_attention(model, taps_f, layer, q_lo, q_hi)[..., ev[0] : ev[1]]
        )
        y_THD, mass_TH = evidence_targets(model, taps_f, layer, attn_HTE, ev, target)
        out[layer] = (taps_a.queries[layer][0, a_lo:a_hi].float().cpu(), y_THD.cpu(), mass_TH.cpu())
    return out, (ev[1] - ev[0]) / q_lo


def harvest_pairs(model, tok, args, have: list[dict]) -> list[dict]:
    """``have`` extended to ``args.pairs`` (context, sentence, question) pairs written by the model (see the
    module docstring): rounds over up to ``CONTEXTS`` contexts, one new evidence sentence per context and
    round."""
    corpus = Corpus(args.corpus, option="--corpus")
    ctxs = sample_contexts(corpus, tok, min(3 * args.pairs, CONTEXTS), args.context_length, seed=args.seed)
    rng, pairs, used = random.Random(args.seed + len(have)), list(have), {p["sentence"] for p in have}
    shown = tqdm(total=args.pairs, initial=len(pairs), desc="questions", unit="pair")
    for ids in [c for _ in range(4) for c in ctxs]:
        if len(pairs) >= args.pairs:
            break
        context = " ".join(tok.decode(ids).split())  # the corpus's line breaks would cut sentences
        sentence = evidence_sentence(context, rng)
        question = write_question(model, tok, sentence) if sentence and sentence not in used else None
        if question:
            pairs.append({"context": context, "sentence": sentence, "question": question})
            used.add(sentence)
            shown.update()
    shown.close()
    return pairs


def parse_guide(text: str) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in part.split(":")) for part in text.split(",") if part]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--release", default="checkpoints/smollm2-135m-k32")
    ap.add_argument("--corpus", default="corpora/public-domain", help="training text (never evaluation text)")
    ap.add_argument("--pairs", type=int, default=160, help="question / evidence pairs to fit on")
    ap.add_argument("--pairs-file", default="runs/query_map/evidence-pairs.json", help="kept pairs (reused)")
    ap.add_argument("--context-length", type=int, default=512)
    ap.add_argument("--target", choices=("argmax", "mean"), default="argmax")
    ap.add_argument("--guide", default="", help="layer:head,... whose attention picks the evidence token")
    ap.add_argument("--weight", choices=("one", "mass"), default="one")
    ap.add_argument("--ridge", type=float, default=1e-2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/query_map/query_map-evidence.safetensors")
    args = ap.parse_args()
    rel = resolve_release(args.release, None)
    stack = load_stack(rel.path, rel.config, rel.layers, None, dtype=resolve_dtype("auto", "cpu"))
    model, tok = stack.loaded.model, stack.loaded.tokenizer
    kept = Path(args.pairs_file)
    pairs = json.loads(kept.read_text()) if kept.is_file() else []
    if len(pairs) < args.pairs:
        pairs = harvest_pairs(model, tok, args, pairs)
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps(pairs, indent=1))
    pairs, guide = pairs[: args.pairs], parse_guide(args.guide)
    eqs = {layer: NormalEquations(stack.geom.num_heads, stack.geom.head_dim) for layer in rel.layers}
    share: dict[int, list[float]] = {layer: [] for layer in rel.layers}
    chance = []
    for pair in tqdm(pairs, desc="rows", unit="pair"):
        got = pair_rows(model, tok, rel.layers, pair, args.target, guide)
        if got is None:
            continue
        for layer, (x, y, mass) in got[0].items():
            eqs[layer].add(x, y, mass if args.weight == "mass" else torch.ones_like(mass))
            share[layer].append(mass.mean().item())
        chance.append(got[1])
    maps = {layer: eq.solve(args.ridge) for layer, eq in eqs.items()}
    fit = {
        **vars(args),
        "rows": eqs[rel.layers[0]].rows,
        "pairs": len(chance),
        "kind": "question-to-evidence",
    }
    qm = QueryMap({x: w for x, (w, _) in maps.items()}, {x: b for x, (_, b) in maps.items()}, fit)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    qm.save(Path(args.out))
    for p in pairs[:3]:
        print(f"e.g. {p['sentence']!r} -> {p['question']!r}")
    print(f"{len(chance)} pairs, {fit['rows']} question rows per layer; evidence share of the context "
          f"(chance) {sum(chance) / len(chance):.3f}")  # fmt: skip
    for layer, s in share.items():
        print(f"layer {layer}: question rows' attention share on the evidence ({'guide' if guide else 'own'}) "
              f"{sum(s) / len(s):.3f}")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
