"""The evaluation harness as a library: plan samples, index each one once, answer it with every method.

``run_eval(cfg)`` loads ONE model stack (model, tokenizer, SAEs), then per sample writes its context as one
document into a fresh temporary corpus, builds an index with that stack (timed: ``build_seconds``) and
answers the question with each method at a matched token budget, greedy decoding:

* ``full``: the whole context, middle-truncated (first half + last half of its tokens, LongBench style) to
  the model window minus the room for the instruction, question, answer prefix and the answer;
* ``bm25``: LongBench's RAG protocol, BM25-ranked passages up to ``budget`` (Retriever mode ``bm25``);
* ``streaming``: StreamingLLM-style, the first ``budget // 2`` and the last ``budget - budget // 2`` tokens
  (Retriever mode ``full`` at ``budget``, which is exactly that middle truncation);
* ``s3`` / ``hybrid``: Retriever modes ``s3`` / ``hybrid`` at ``budget``.

The prompt follows RULER: ``instruction``, context, question in the user turn of the chat template, then
``answer_prefix`` opening the assistant turn (all from ``Sample.meta``); without them, ``Retriever.prompt``.
Each answer gives one ``EvalRow``; ``s3attn.evaluation.report`` turns rows into tables and a plot.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from s3attn.config import StackOptions, flat_options
from s3attn.errors import S3Error
from s3attn.evaluation import tasks as T
from s3attn.evaluation.runtime import environment, peak_rss_mb
from s3attn.models.precision import check_dtype, dtype_name, model_dtype
from s3attn.retrieval.retriever import RetrievalConfig, check_retrieval

TASKS = (
    "niah",
    "ruler_niah_single",
    "ruler_niah_multikey",
    "ruler_niah_multivalue",
    "ruler_niah_multiquery",
    "ruler_vt",
    "ruler_cwe",
    "multidoc_qa",
)
METHODS = ("full", "bm25", "streaming", "s3", "hybrid")
LIST_TASKS = frozenset({"ruler_niah_multivalue", "ruler_niah_multiquery", "ruler_vt", "ruler_cwe"})
HAYSTACKS = ("essay", "noise")
SEPARATOR = "\n...\n"  # between retrieved spans, as Retriever.answer joins them
SEPARATOR_ROOM = 16  # tokens kept free in the 'full' window for separators and re-tokenization drift


@dataclass
class EvalConfig:
    """Every option of ``s3-eval``."""

    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    """Tasks to run: niah, ruler_niah_single, ruler_niah_multikey, ruler_niah_multivalue,
    ruler_niah_multiquery, ruler_vt, ruler_cwe, multidoc_qa."""
    lengths: list[int] = field(default_factory=lambda: [2048, 8192, 32768])
    """Context lengths in tokens of the model's tokenizer, comma-separated."""
    depths: list[float] = field(default_factory=lambda: [0.0, 25.0, 50.0, 75.0, 100.0])
    """Needle depths in percent of the context (niah only; RULER tasks draw their own)."""
    samples: int = 2
    """Samples per (task, length), and per depth for niah."""
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    """Methods to compare: full, bm25, streaming, s3, hybrid."""
    stack: StackOptions = field(default_factory=StackOptions)
    """The SAE release and model every sample is indexed and answered with."""
    max_context: int | None = None
    """Model window in tokens for 'full' (prompt + answer); default: the model's max_position_embeddings."""
    haystack: str = "essay"
    """Haystack of the ruler_niah_* tasks: essay (Paul Graham) or noise (RULER's repeated sentences)."""
    chunk: int = 2048
    """Index build scan chunk in tokens."""
    seed: int = 0
    """Base seed; every sample's seed derives from it and from (task, length, depth, sample number)."""
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


class EvalItem(NamedTuple):
    task: str
    length: int
    depth: float | None  # percent, niah only
    number: int  # sample number within (task, length, depth)
    seed: int


class EvalRow(NamedTuple):
    task: str
    length: int  # requested context length in tokens
    depth: float | None  # percent (niah) or None
    sample: int
    seed: int
    method: str
    budget: int  # context tokens allowed for this method
    score: float  # metrics.score of the answer, in [0, 1]
    recall: float  # fraction of the reference answers present in the context fed to the model
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


def _check_choices(cfg: EvalConfig) -> None:
    bad = [t for t in cfg.tasks if t not in TASKS]
    if bad or not cfg.tasks:
        raise S3Error(f"--tasks {','.join(bad) or '(none)'}: choose from {', '.join(TASKS)}")
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad or not cfg.methods:
        raise S3Error(f"--methods {','.join(bad) or '(none)'}: choose from {', '.join(METHODS)}")
    if cfg.haystack not in HAYSTACKS:
        raise S3Error(f"--haystack {cfg.haystack}: choose essay or noise")


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


def check_config(cfg: EvalConfig) -> EvalConfig:
    """Refuse bad options with one-line S3Errors; returns ``cfg`` with duplicate entries dropped."""
    _check_choices(cfg)
    _check_sizes(cfg)
    check_retrieval(cfg.retrieval)
    check_dtype(cfg.stack.dtype)
    cfg.tasks, cfg.methods = _unique(cfg.tasks), _unique(cfg.methods)
    cfg.lengths, cfg.depths = _unique(cfg.lengths), _unique(cfg.depths)
    return cfg


def plan(cfg: EvalConfig) -> list[EvalItem]:
    """Every sample to run, task-major, then length, depth, number; seeds are stable per item."""
    items = []
    for task in cfg.tasks:
        for length in cfg.lengths:
            for depth in cfg.depths if task == "niah" else [None]:
                for number in range(cfg.samples):
                    key = f"{task}|{length}|{depth}|{number}".encode()
                    seed = (cfg.seed * 1_000_003 + zlib.crc32(key)) % (2**31)
                    items.append(EvalItem(task, length, depth, number, seed))
    return items


def make_sample(item: EvalItem, tokenizer_len: Callable[[str], int], haystack: str = "essay") -> T.Sample:
    """The task generator's sample for ``item`` (lengths measured with ``tokenizer_len``)."""
    task, n, seed = item.task, item.length, item.seed
    if task == "niah":
        return T.needle_haystack(T.paul_graham_text(), tokenizer_len, n, (item.depth or 0.0) / 100, seed)
    if task.startswith("ruler_niah_"):
        text = T.paul_graham_text() if haystack == "essay" else None
        return T.ruler_niah(task.removeprefix("ruler_niah_"), text, tokenizer_len, n, seed)  # type: ignore[arg-type]
    if task == "ruler_vt":
        return T.ruler_variable_tracking(n, tokenizer_len, seed)
    if task == "ruler_cwe":
        return T.ruler_common_words(n, tokenizer_len, seed)
    if task == "multidoc_qa":
        return T.multidoc_qa(T.public_domain_passages(), n, tokenizer_len, seed)
    raise S3Error(f"--tasks {task}: choose from {', '.join(TASKS)}")


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


def answer_method(a: _Answering, method: str, mode: str, budget: int) -> EvalRow:
    """The row of ``method``: retrieve in Retriever ``mode`` within ``budget`` tokens, answer greedily."""
    from s3attn.evaluation.metrics import score
    from s3attn.retrieval.generate import generate

    r, sample, tok = a.retriever, a.sample, a.retriever.tokenizer
    t0 = time.perf_counter()
    spans = r.retrieve(sample.question, mode, budget)
    context = SEPARATOR.join(s.text.strip() for s in spans)
    text, n_prompt = generate(r.model, tok, build_prompt(tok, sample, context, r.prompt), a.new_tokens)
    return EvalRow(task=a.item.task, length=a.item.length, depth=a.item.depth, sample=a.item.number,
                   seed=a.item.seed, method=method, budget=budget,
                   score=score(sample.metric, text, sample.answers),
                   recall=context_recall(context, sample.answers), prompt_tokens=n_prompt,
                   context_tokens=sum(s.end - s.start for s in spans), overhead_tokens=a.overhead,
                   spans=[[int(s.start), int(s.end)] for s in spans], doc_tokens=int(r.store.num_tokens),
                   seconds=time.perf_counter() - t0, build_seconds=a.build_seconds, peak_rss_mb=peak_rss_mb(),
                   metric=sample.metric, answer=text, answers=list(sample.answers))  # fmt: skip


def answer_sample(
    item: EvalItem,
    sample: T.Sample,
    stack,
    cfg: EvalConfig,
    workdir: Path,
    on_answer: Callable[[], None],
    identity: dict | None = None,
) -> list[EvalRow]:
    """Index ``sample.context`` once (or reuse its index from ``cfg.index_cache``, whose key also covers
    ``identity``, what the build depends on) and answer it with every method of ``cfg``."""
    from s3attn.evaluation.index_cache import sample_index
    from s3attn.retrieval.retriever import Retriever

    shutil.rmtree(workdir, ignore_errors=True)
    index, build_seconds = sample_index(item.task, sample.context, stack, cfg, workdir, identity or {})
    new_tokens = new_tokens_for(item.task, cfg)
    retriever = Retriever(index, cfg=retrieval_config(cfg, new_tokens), stack=stack)
    tok = retriever.tokenizer
    rows = []
    try:
        overhead = count_tokens(tok, build_prompt(tok, sample, "", retriever.prompt))
        full_room = model_window(retriever.model, cfg.max_context) - overhead - new_tokens - SEPARATOR_ROOM
        if full_room < 1 and "full" in cfg.methods:
            raise S3Error(f"--max-context: the window leaves no room for context ({overhead} prompt tokens)")
        shared = _Answering(item, sample, retriever, new_tokens, overhead, build_seconds)
        for method in cfg.methods:
            mode, budget = method_plan(method, cfg.retrieval.budget, full_room)
            rows.append(answer_method(shared, method, mode, budget))
            on_answer()
    finally:
        retriever.store.close()
        shutil.rmtree(workdir, ignore_errors=True)
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
        for item in items:
            bar.set_postfix_str(
                f"{item.task} {item.length}" + (f" @{item.depth:g}%" if item.depth is not None else "")
            )
            sample = make_sample(item, tokenizer_len, cfg.haystack)
            rows += answer_sample(
                item, sample, stack, cfg, Path(tmp) / "sample", lambda: bar.update(1), identity
            )
            if on_sample is not None:
                on_sample(EvalRun(rows, flat_options(cfg), env))
    bar.close()
    return EvalRun(rows, flat_options(cfg), env)
