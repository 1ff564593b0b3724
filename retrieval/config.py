"""The question path's options: ``RetrievalConfig`` (budget, spans, fusion) with its nested
``QuestionConfig`` (how the question is coded and matched, the S3 side), and their checks. Every default of
the question path is here; ``s3-index ask``, ``s3-eval`` and the server parse these dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field

from s3attn.constants import SITE_KEY_NAME
from s3attn.errors import S3Error
from s3attn.retrieval.fusion import FusionConfig, check_fusion_config


@dataclass
class QuestionConfig:
    site: str = SITE_KEY_NAME
    """Which head vectors of the question are coded and matched against the key postings: key (the
    question's keys, per KV head), query (its query heads, GQA map, as in the paper) or both."""
    pool: str = "max"
    """How activations are pooled over question tokens and the heads of a GQA group: sum or max."""
    max_features: int = 64
    """Features read per (layer, KV head): the best by pooled weight x IDF."""
    stop_ratio: float = 0.5
    """Stop features: a feature with more postings than this many times the average (k / latents of the
    index's tokens: 0.8 % with the published SAEs) is skipped; 0 keeps all. 0.5 (was 2.0) was chosen on
    tuning seeds: only rarer-than-average features, which find paraphrased needles far more often."""
    idf: str = "inverse_log"
    """IDF form: inverse_log = 1 / (log(1 + df) + 1); log = log(N / (1 + df)); none = 1."""
    use_posting_acts: bool = True
    """Multiply each posting by its stored (key-side) activation."""
    max_postings: int = 1 << 18
    """Postings read per question at most, split evenly over the (layer, KV head) pairs: in weight order, a
    feature whose list (in an index of format 3: whose top impact tier) no longer fits is skipped (the most
    frequent features go first, like stop words); then lower tiers of the features kept while it lasts."""
    impact_tiers: bool = True
    """Read lists by impact tiers (index format 3): the top tier of every chosen feature first, then lower
    tiers while ``max_postings`` lasts. Off: whole lists only, as an index of format 2 is read."""
    query_map: str = ""
    """A query map file (``train.query_map``): with site query or both, the question's query vectors are
    mapped into the key space before they are coded (empty: coded as they are, as in the paper; release: the
    query_map.safetensors of the index's own SAE release)."""
    coordination: float = 0.0
    """Coordination power: a touched token's score is multiplied by (share of the (layer, KV head) pairs
    with postings within ``coordination_window`` tokens) ** this; 0: off."""
    coordination_window: int = 32
    """Tokens either side within which a (layer, KV head) pair's postings count for coordination."""
    saturation: float = 1.0
    """Term-frequency saturation: a posting's weight is divided by (its list's postings read within
    ``saturation_window`` tokens, itself included) ** this, so a feature repeated through a passage counts
    about once there (BM25's tf saturation); 0: off. 1 (window 128) was chosen on tuning seeds: 9 more
    paraphrased needles of 120 found at 16k-64k, 1 fewer, no change on the other families."""
    saturation_window: int = 128
    """Tokens either side within which a list's postings count for saturation."""
    read_layers: list[int] = field(default_factory=list)
    """Indexed layers whose postings the question reads (empty: all of the index's layers)."""
    query_heads: list[int] = field(default_factory=list)
    """Query heads coded at site query or both (empty: all), e.g. the model's retrieval heads; a KV head
    none of whose query heads is chosen is read by its key rows only (site both) or not at all (query)."""
    expand: str = "both"
    """Question expansion before coding (HyDE): none; hypothesis: the index's model first writes a short
    passage that answers the question (greedy, ``expand_tokens`` at most, prompted with ``expand_prompt``) and
    that passage is coded instead of the question; both: the question, then that passage. BM25 still reads
    the question as asked. both (was none) was chosen on tuning seeds: S3 finds 0.900 / 0.775 / 0.550 of
    the paraphrased needles at 16k / 32k / 64k against 0.775 / 0.700 / 0.425, lexical needles as before;
    hypothesis alone finds more at 64k (0.675) but fewer at 32k (0.625) and loses a lexical needle."""
    expand_tokens: int = 40
    """Tokens the model writes at most for ``expand``."""
    expand_prompt: str = "Write a short passage that answers this question: {question}"
    """The instruction for ``expand``, inside the model's chat template; ``{question}`` is the question."""
    half_weights: bool = True
    """On CPU, run the question's forward with fp16-packed linear weights (fbgemm, computed in fp32): about
    1.5x faster, codes as fp32's to within ~0.1 % of features (see s3attn.models.half); off: the
    model as it is."""


@dataclass
class RetrievalConfig:
    """Everything the question path reads: the budget, the S3 scoring and spans, the hybrid fusion."""

    budget: int = 2048
    """Context tokens fed to the model: the retrieved spans' total length at most."""
    question: QuestionConfig = field(default_factory=QuestionConfig)
    """How the question is coded and matched against the index postings (the S3 side)."""
    window: int = 9
    """Smoothing window in tokens."""
    min_distance: int = 64
    """Non-maximum suppression radius in tokens."""
    frac: float = 0.35
    """Grow a span while the smoothed score stays above this fraction of its peak."""
    max_span: int = 64
    """Longest S3 span in tokens (64, was 160, chosen on tuning seeds: more, shorter spans fit a budget)."""
    min_span: int = 24
    """Shortest S3 span in tokens."""
    sink_tokens: int = 1
    """First tokens of each document given no S3 score: the model's attention sink, whose key is an outlier
    that many features fire on."""
    bias_first: int = 64
    """Tokens kept from the start of the text (hybrid)."""
    bias_last: int = 64
    """Tokens kept from the end of the text (hybrid)."""
    hybrid: FusionConfig = field(default_factory=FusionConfig)
    """How the hybrid mode ranks BM25 passages against S3 spans."""
    max_new_tokens: int = 48
    """Generated tokens at most."""


def check_retrieval(cfg: RetrievalConfig) -> RetrievalConfig:
    """``cfg`` if its values are valid, else a one-line S3Error naming the option."""
    floors = [(cfg, n, 1) for n in ("budget", "window", "max_span", "min_span", "max_new_tokens")]
    floors += [(cfg, n, 0) for n in ("min_distance", "sink_tokens", "bias_first", "bias_last")]
    floors += [(cfg.question, n, 0) for n in ("saturation", "saturation_window")]
    floors += [(cfg.question, "expand_tokens", 1)]
    for obj, name, low in floors:
        if getattr(obj, name) < low:
            raise S3Error(f"--{name.replace('_', '-')} {getattr(obj, name)}: must be at least {low}")
    check_expand(cfg.question)
    if not 0.0 <= cfg.frac <= 1.0:
        raise S3Error(f"--frac {cfg.frac}: must be in [0, 1]")
    check_fusion_config(cfg.hybrid)
    return cfg


EXPAND_MODES = ("none", "hypothesis", "both")


def check_expand(cfg: QuestionConfig) -> None:
    """A one-line S3Error for an unknown ``--expand`` or an ``--expand-prompt`` without ``{question}``."""
    if cfg.expand not in EXPAND_MODES:
        raise S3Error(f"--expand {cfg.expand}: choose one of {', '.join(EXPAND_MODES)}")
    if "{question}" not in cfg.expand_prompt:
        raise S3Error(f"--expand-prompt {cfg.expand_prompt!r}: put {{question}} where the question goes")
