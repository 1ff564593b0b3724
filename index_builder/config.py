"""BuildConfig: every option of ``s3-index build``; the field docstrings are its ``--help``."""

from __future__ import annotations

from dataclasses import dataclass, field

from s3attn.config import StackOptions


@dataclass
class BuildConfig:
    """Every option of ``s3-index build``."""

    out: str = "indexes/default"
    """Index folder to create or add to, or an fsspec URL (s3://bucket/prefix, gs://..., memory://...)."""
    storage_options: str = ""
    """For an --out URL: fsspec storage options as a JSON object (e.g. '{"endpoint_url": "http://..."}');
    empty: $S3ATTN_STORAGE_OPTIONS, else the usual environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID ...)."""
    stack: StackOptions = field(default_factory=StackOptions)
    """The SAE release and model to prefill with (the index records them; questions use the same)."""
    chunk: int = 2048
    """Scan chunk: tokens prefilled per forward pass (no KV cache is kept across chunks)."""
    overlap: int = 64
    """Tokens of left context carried into each chunk (their codes are not stored again)."""
    segment_tokens: int = 65536
    """Tokens gathered in RAM before an immutable segment is written (bounds the build's memory)."""
    merge_tier: int = 8
    """After the build, merge runs of this many similar-sized segments (tiered, Lucene-style); 0 = never."""
    merge_all: bool = False
    """After the build, merge every segment into one (as `s3-index merge --all`): the fastest index to read,
    since a question reads each list once per segment, at the cost of rewriting the index (about an hour for
    16M tokens on 2 cores; the prefill of 16M tokens takes far longer)."""
    passage_tokens: int = 128
    """BM25 passage length in tokens."""
    passage_stride: int = 64
    """BM25 passage stride in tokens."""
    text_field: str = "text"
    """Field / column holding the text in .jsonl, .parquet and saved datasets."""
    skip_bad_files: bool = False
    """Skip files that are not UTF-8 (with a warning) instead of stopping with an error."""
    resume: bool = False
    """Finish an interrupted build: drop a half-indexed last document and go on."""
    devices: int = 1
    """Devices/processes per node for the prefill (documents are dealt to ranks)."""
    num_nodes: int = 1
    """Nodes of a cluster build (Lightning Trainer num_nodes): ranks = num_nodes x devices, every rank writes
    into the shared --out; a cluster launcher (torchrun, srun) starts every rank."""
    accelerator: str = "auto"
    """Lightning accelerator: auto, cpu, gpu."""
    progress: bool = True
    """Show a progress bar in tokens."""
