"""The evaluation harness as a library: plan samples, index each context once, answer it with every method.

``run_eval(cfg)`` loads ONE model stack (model, tokenizer, SAEs), then per sample writes its context as one
document into a fresh temporary corpus, builds an index with that stack (timed: ``build_seconds``) and
answers the question with each method at a matched token budget, greedy decoding:

* ``full``: the whole context, middle-truncated (first half + last half of its tokens, LongBench style) to
  the model window minus the room for the instruction, question, answer prefix and the answer;
* ``bm25``: LongBench's RAG protocol, BM25-ranked passages up to ``budget`` (Retriever mode ``bm25``);
* ``streaming``: StreamingLLM-style, the first ``budget // 2`` and the last ``budget - budget // 2`` tokens
  (Retriever mode ``full`` at ``budget``, which is exactly that middle truncation);
* ``s3`` / ``hybrid``: Retriever modes ``s3`` / ``hybrid`` at ``budget``.

A sample whose context is the one of the sample before (the shared-context tasks of ``plan``: many questions
of one context) reuses that sample's index and retriever; it reports that index's ``build_seconds``.
Each row records the evidence recall of the spans fed (``s3attn.evaluation.evidence``: the fraction of the
sample's evidence items at least half fed; None without evidence) next to the answer-string recall
(``recall``) and the answer score. With ``generate=False`` nothing is generated (``answer`` empty, ``score``
None): a retrieval-only run, for tuning on evidence recall.

The prompt follows RULER: ``instruction``, context, question in the user turn of the chat template, then
``answer_prefix`` opening the assistant turn (all from ``Sample.meta``); without them, ``Retriever.prompt``.
Each answer gives one ``EvalRow``; ``s3attn.evaluation.report`` turns rows into tables and plots.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from s3attn.config import StackOptions, flat_options
from s3attn.errors import S3Error
from s3attn.evaluation import tasks as T
from s3attn.evaluation.plan import (
    LIST_TASKS,
    METHODS,
    TASKS,
    EvalItem,
    check_choices,
    make_sample,
    plan,
    split_of,
)
from s3attn.evaluation.runtime import environment, peak_rss_mb
from s3attn.models.precision import check_dtype, dtype_name, model_dtype
from s3attn.retrieval.retriever import RetrievalConfig, check_retrieval

logger = logging.getLogger(__name__)

SEPARATOR = "\n...\n"  # between retrieved spans, as Retriever.answer joins them
SEPARATOR_ROOM = 16  # tokens kept free in the 'full' window for separators and re-tokenization drift


@dataclass
class EvalConfig:
    """Every option of ``s3-eval``."""

    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    """Tasks to run: niah, ruler_niah_single, ruler_niah_multikey, ruler_niah_multivalue,
    ruler_niah_multiquery, ruler_vt, ruler_cwe, multidoc_qa, literal_niah, paraphrase_niah,
    paraphrase_multikey, drop_qa (the last four ask --samples questions of one context per length)."""
    lengths: list[int] = field(default_factory=lambda: [2048, 8192, 32768])
    """Context lengths in tokens of the model's tokenizer, comma-separated."""
    depths: list[float] = field(default_factory=lambda: [0.0, 25.0, 50.0, 75.0, 100.0])
    """Needle depths in percent of the context (niah only; the other tasks draw their own)."""
    samples: int = 2
    """Samples per (task, length), and per depth for niah."""
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    """Methods to compare: full, bm25, streaming, s3, hybrid."""
    stack: StackOptions = field(default_factory=StackOptions)
    """The SAE release and model every sample is indexed and answered with."""
    max_context: int | None = None
    """Model window in tokens for 'full' (prompt + answer); default: the model's max_position_embeddings."""
    haystack: str = "essay"
    """Haystack of the ruler_niah_*, literal_niah, paraphrase_niah and paraphrase_multikey tasks: essay (Paul
    Graham, ~145k tokens, repeated when a context needs more), long (the essays then the DROP passages,
    ~300k tokens of text that does not repeat) or noise (RULER's repeated sentences)."""
    chunk: int = 2048
    """Index build scan chunk in tokens."""
    seed: int = 0
    """Base seed; every sample's seed derives from it and from (task, length, depth, sample number).
    Seeds 0-9 are tuning seeds, 100 and up held out (rows record the split)."""
    seeds: list[int] | None = None
    """Base seeds to run one after the other, e.g. 100,101 (held out); default: --seed alone."""
    same_needles: bool = False
    """literal_niah, paraphrase_niah, paraphrase_multikey: plant the same needles at the same relative depths
    at every length (their seed leaves the length out), to compare recall across index sizes."""
    generate: bool = True
    """Generate and score answers; without (--no-generate), rows have an empty answer and no score, a
    retrieval-only run measuring evidence recall quickly."""
    out: str = "runs/eval"
    """Output folder: results.json, results.md, scores.png."""
    progress: bool = True
    """Show a progress bar over samples x methods."""
    index_cache: str | None = None
    """Folder keeping each sample's built index for later runs (keyed by the context, the build options and
    the SAE release), so a run that changes only retrieval settings skips the builds; a reused index reports
    the build_seconds of its first build. Default: none (each index is built in a temporary folder)."""
    retrieval: RetrievalConfig = field(default_factory=lambda: RetrievalConfig(max_new_tokens=32))
    """Retrieval and generation settings of every method: bm25, streaming, s3 and hybrid feed budget
    context tokens (full: the model window); list-answer tasks (multivalue, multiquery, vt, cwe) get
    twice max_new_tokens."""


class EvalRow(NamedTuple):
    task: str
    length: int  # requested context length in tokens
    depth: float | None  # percent (niah) or None
    sample: int
    seed: int
    base_seed: int  # the run's base seed this sample derives from
    split: str  # tuning, held-out or other (of base_seed)
    method: str
    budget: int  # context tokens allowed for this method
    score: float | None  # metrics.score of the answer, in [0, 1]; None without generation
    recall: float  # answer-string recall: fraction of the reference answers present in the context fed
    evidence_recall: float | None  # fraction of the evidence items at least half fed; None: no evidence
    evidence_coverage: list[float]  # per evidence item, the fraction of its tokens fed
    prompt_tokens: int  # tokens fed to the model (whole prompt)
    context_tokens: int  # of which retrieved context (sum of span lengths)
    overhead_tokens: int  # prompt tokens with an empty context
    spans: list[list[int]]  # [start, end) token ranges of the document fed, in order
    doc_tokens: int  # tokens of the indexed context
    seconds: float  # retrieve + generate
    build_seconds: float  # index build of this sample (shared by its methods)
    peak_rss_mb: float  # process RSS high-water mark so far
    metric: str
    answer: str
    answers: list[str]


class EvalRun(NamedTuple):
    rows: list[EvalRow]
    config: dict[str, Any]
    environment: dict[str, Any]


# ---- config and plan ---------------------------------------------------------------------------------


def _unique(values: list) -> list:
    return list(dict.fromkeys(values))


def _check_sizes(cfg: EvalConfig) -> None:
    if not cfg.lengths:
        raise S3Error("--lengths is empty; give context lengths in tokens, e.g. --lengths 2048,8192")
    if any(n < 64 for n in cfg.lengths):
        raise S3Error(f"--lengths {cfg.lengths}: each length must be at least 64 tokens")
    if "niah" in cfg.tasks and (not cfg.depths or any(not 0 <= d <= 100 for d in cfg.depths)):
        raise S3Error(f"--depths {cfg.depths}: give depths in percent, each in [0, 100]")
    for name in ("samples", "chunk"):
        if getattr(cfg, name) < 1:
            raise S3Error(f"--{name} {getattr(cfg, name)}: must be at least 1")
    if cfg.max_context is not None and cfg.max_context < 1:
        raise S3Error(f"--max-context {cfg.max_context}: must be at least 1 token")
    if cfg.seed < 0 or any(s < 0 for s in cfg.seeds or []):
        raise S3Error(f"--seeds {cfg.seeds if cfg.seeds else cfg.seed}: seeds must be at least 0")


def check_config(cfg: EvalConfig) -> EvalConfig:
    """Refuse bad options with one-line S3Errors; returns ``cfg`` with duplicate entries dropped."""
    check_choices(cfg)
    _check_sizes(cfg)
    check_retrieval(cfg.retrieval)
    check_dtype(cfg.stack.dtype)
    cfg.tasks, cfg.methods = _unique(cfg.tasks), _unique(cfg.methods)
    cfg.lengths, cfg.depths = _unique(cfg.lengths), _unique(cfg.depths)
    cfg.seeds = _unique(cfg.seeds) if cfg.seeds else None
    return cfg


def retrieval_config(cfg: EvalConfig, max_new_tokens: int) -> RetrievalConfig:
    """The RetrievalConfig of a run (``cfg.retrieval``), generating ``max_new_tokens`` at most."""
    return replace(cfg.retrieval, max_new_tokens=max_new_tokens)


def new_tokens_for(task: str, cfg: EvalConfig) -> int:
    return cfg.retrieval.max_new_tokens * (2 if task in LIST_TASKS else 1)


# ---- prompt and per-sample answering -----------------------------------------------------------------


def build_prompt(tokenizer, sample: T.Sample, context: str, fallback: Callable[[str, str], str]) -> str:
    """RULER-style prompt from ``sample.meta`` (instruction, context, question | answer prefix), else
    ``fallback(context, question)`` (``Retriever.prompt``)."""
    instruction = sample.meta.get("instruction", "")
    prefix = sample.meta.get("answer_prefix", "")
    if not instruction and not prefix:
        return fallback(context, sample.question)
    content = "\n\n".join(x for x in (instruction, context, sample.question) if x)
    msgs = [{"role": "user", "content": content}]
    chat = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return chat + prefix


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def context_recall(context: str, answers: list[str]) -> float:
    """Fraction of the reference answers found (case-insensitive substring) in the context fed."""
    low = context.lower()
    return sum(1.0 for a in answers if a.lower() in low) / max(len(answers), 1)


def model_window(model, max_context: int | None) -> int:
    if max_context:
        return max_context
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    window = getattr(config, "max_position_embeddings", None)
    if not window:
        raise S3Error("the model does not say its window (max_position_embeddings); pass --max-context")
    return int(window)


def method_plan(method: str, budget: int, full_room: int) -> tuple[str, int]:
    """(Retriever mode, context token budget) of a method."""
    if method == "full":
        return "full", full_room
    if method == "streaming":
        return "full", budget  # first budget // 2 + last budget - budget // 2 tokens
    return method, budget


class _Answering(NamedTuple):
    """What every method of one sample shares."""

    item: EvalItem
    sample: T.Sample
    retriever: Any  # Retriever on the sample's index
    new_tokens: int
    overhead: int  # prompt tokens with an empty context
    build_seconds: float
    evidence: list[tuple[int, int]]  # token ranges of the sample's evidence items
    generate: bool


def answer_method(a: _Answering, method: str, mode: str, budget: int) -> EvalRow:
    """The row of ``method``: retrieve in Retriever ``mode`` within ``budget`` tokens, answer greedily
    (unless ``a.generate`` is off)."""
    from s3attn.evaluation.evidence import evidence_coverage, evidence_recall
    from s3attn.evaluation.metrics import score
    from s3attn.retrieval.generate import generate

    r, sample, tok = a.retriever, a.sample, a.retriever.tokenizer
    t0 = time.perf_counter()
    spans = r.retrieve(sample.question, mode, budget)
    fed = [[int(s.start), int(s.end)] for s in spans]
    context = SEPARATOR.join(s.text.strip() for s in spans)
    prompt = build_prompt(tok, sample, context, r.prompt)
    if a.generate:
        text, n_prompt = generate(r.model, tok, prompt, a.new_tokens)
        answer_score: float | None = score(sample.metric, text, sample.answers)
    else:
        text, n_prompt, answer_score = "", count_tokens(tok, prompt), None
    coverage = evidence_coverage(a.evidence, fed)
    return EvalRow(task=a.item.task, length=a.item.length, depth=a.item.depth, sample=a.item.number,
                   seed=a.item.seed, base_seed=a.item.base_seed, split=split_of(a.item.base_seed),
                   method=method, budget=budget, score=answer_score,
                   recall=context_recall(context, sample.answers), evidence_recall=evidence_recall(coverage),
                   evidence_coverage=coverage, prompt_tokens=n_prompt,
                   context_tokens=sum(e - s for s, e in fed), overhead_tokens=a.overhead,
                   spans=fed, doc_tokens=int(r.store.num_tokens),
                   seconds=time.perf_counter() - t0, build_seconds=a.build_seconds, peak_rss_mb=peak_rss_mb(),
                   metric=sample.metric, answer=text, answers=list(sample.answers))  # fmt: skip


class IndexSlot:
    """The index (and Retriever) of the last context a run built, reused while the next sample's context is
    the same string; ``workdir`` holds an index built without ``--index-cache``. ``close()`` at the end."""

    def __init__(self, stack, cfg: EvalConfig, workdir: Path, identity: dict | None = None):
        self.stack, self.cfg, self.workdir, self.identity = stack, cfg, workdir, identity or {}
        self.context_hash: str | None = None
        self.retriever: Any = None
        self.build_seconds = 0.0
        self.builds = 0  # indexes built or taken from the cache

    def get(self, task: str, context: str) -> tuple[Any, float]:
        """(Retriever, build_seconds) of ``context``'s index: the held one when the context is unchanged."""
        from s3attn.evaluation.index_cache import sample_index
        from s3attn.retrieval.retriever import Retriever

        digest = hashlib.sha256(context.encode("utf-8")).hexdigest()
        if digest != self.context_hash or self.retriever is None:
            self.close()
            index, self.build_seconds = sample_index(task, context, self.stack, self.cfg, self.workdir,
                                                     self.identity)  # fmt: skip
            cfg = retrieval_config(self.cfg, self.cfg.retrieval.max_new_tokens)  # answers: new_tokens_for
            self.retriever = Retriever(index, cfg=cfg, stack=self.stack)
            self.context_hash, self.builds = digest, self.builds + 1
        return self.retriever, self.build_seconds

    def close(self) -> None:
        if self.retriever is not None:
            self.retriever.store.close()
        self.retriever, self.context_hash = None, None
        shutil.rmtree(self.workdir, ignore_errors=True)


def answer_sample(
    item: EvalItem, sample: T.Sample, cfg: EvalConfig, slot: IndexSlot, on_answer: Callable[[], None]
) -> list[EvalRow]:
    """Index ``sample.context`` once (reuse ``slot``'s index when it holds this context, or the one in
    ``cfg.index_cache``) and answer it with every method of ``cfg``."""
    from s3attn.evaluation.evidence import evidence_token_ranges

    retriever, build_seconds = slot.get(item.task, sample.context)
    tok, new_tokens = retriever.tokenizer, new_tokens_for(item.task, cfg)
    evidence = evidence_token_ranges(tok, sample.context, sample.meta.get("evidence") or [])
    if any(e > retriever.store.num_tokens for _, e in evidence):
        logger.warning("%s: evidence past the index's %d tokens", item.task, retriever.store.num_tokens)
    overhead = count_tokens(tok, build_prompt(tok, sample, "", retriever.prompt))
    full_room = model_window(retriever.model, cfg.max_context) - overhead - new_tokens - SEPARATOR_ROOM
    if full_room < 1 and "full" in cfg.methods:
        raise S3Error(f"--max-context: the window leaves no room for context ({overhead} prompt tokens)")
    shared = _Answering(item, sample, retriever, new_tokens, overhead, build_seconds, evidence, cfg.generate)
    rows = []
    for method in cfg.methods:
        mode, budget = method_plan(method, cfg.retrieval.budget, full_room)
        rows.append(answer_method(shared, method, mode, budget))
        on_answer()
    return rows


# ---- the whole run ---------------------------------------------------------------------------------------


def load_eval_stack(cfg: EvalConfig):
    """(stack, release path): the model + SAEs every sample shares, as build_index would load them, the
    model in ``--dtype`` (``auto`` resolved for the CPU, where the stack is loaded)."""
    from s3attn.models.precision import resolve_dtype
    from s3attn.saes.stack import load_stack, resolve_release

    release, rel_cfg, layers = resolve_release(cfg.stack.sae, cfg.stack.layers)
    dtype = resolve_dtype(cfg.stack.dtype, "cpu")
    return load_stack(release, rel_cfg, layers, cfg.stack.model, dtype=dtype), release


def _label(item: EvalItem) -> str:
    depth = f" @{item.depth:g}%" if item.depth is not None else ""
    return f"{item.task} {item.length}{depth} #{item.number} seed {item.base_seed}"


def run_eval(
    cfg: EvalConfig,
    *,
    stack=None,
    on_sample: Callable[[EvalRun], None] | None = None,
) -> EvalRun:
    """Run every planned sample with every method; ``on_sample(the run so far)`` after each sample."""
    from tqdm.auto import tqdm

    from s3attn.evaluation.index_cache import index_identity

    cfg = check_config(cfg)
    items = plan(cfg)
    if stack is None:
        stack, release = load_eval_stack(cfg)
    else:
        from s3attn.saes.stack import resolve_release

        release = resolve_release(cfg.stack.sae, cfg.stack.layers)[0]
    tokenizer = stack[0].tokenizer

    def tokenizer_len(text: str) -> int:
        return count_tokens(tokenizer, text)

    env = environment(stack, model_window(stack[0].model, cfg.max_context), release)
    env["dtype"] = dtype_name(model_dtype(stack[0].model))  # what --dtype resolved to (config: as asked)
    identity = index_identity(stack, cfg, release) if cfg.index_cache else None
    rows: list[EvalRow] = []
    bar = tqdm(total=len(items) * len(cfg.methods), desc="s3-eval", unit="answer", disable=not cfg.progress)
    with tempfile.TemporaryDirectory(prefix="s3-eval-") as tmp:
        slot = IndexSlot(stack, cfg, Path(tmp) / "sample", identity)
        try:
            for item in items:
                bar.set_postfix_str(_label(item))
                sample = make_sample(item, tokenizer_len, cfg.haystack)
                rows += answer_sample(item, sample, cfg, slot, lambda: bar.update(1))
                if on_sample is not None:
                    on_sample(EvalRun(rows, flat_options(cfg), env))
        finally:
            slot.close()
    bar.close()
    logger.info("%d samples, %d indexes", len(items), slot.builds)
    return EvalRun(rows, flat_options(cfg), env)
