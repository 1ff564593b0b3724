"""s3-attention: attention-aligned endogenous retrieval.

Subpackages (each one step of the data flow):

- ``s3attn.saes``          Top-k SAE, checkpoint format, K/Q taps, model loading (light: torch + safetensors)
- ``s3attn.train``         harvest head vectors and train SAEs with Lightning (``s3-train-sae``)
- ``s3attn.index_builder`` streaming prefill -> Zarr posting lists + BM25 (``s3-index build``)
- ``s3attn.retrieval``     span selection, generation, evaluation (``s3-index ask``, ``s3-eval``)
"""

__version__ = "0.1.0"
