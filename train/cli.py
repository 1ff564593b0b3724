"""``s3-train-sae``: harvest K/Q head vectors and train one Top-k SAE per layer, then write a release.

s3-train-sae --layer 16 --k 32
s3-train-sae --layers 8,16 --tokens 2000000 --out checkpoints/smollm2-135m-k32
s3-train-sae export RELEASE --format saelens --out DIR   (see s3-train-sae export --help)
s3-train-sae query-map RELEASE [--target argmax --out FILE] (see s3-train-sae query-map --help)

Every option is listed below with its effective default (TrainConfig, then configs/train.yaml, then
--config FILE); options on the command line win over all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from s3attn.config import parse_config
from s3attn.errors import S3Error, cli_entry
from s3attn.logs import setup_cli_logging
from s3attn.paths import atomic_write_text, kill_point
from s3attn.train.config import TrainConfig

PROG = "s3-train-sae"


def parse_args(argv: Sequence[str] | None) -> TrainConfig:
    return parse_config(
        TrainConfig, "train", argv, prog=PROG, description=__doc__, aliases={"layers": ["--layer"]}
    )


def validate(cfg: TrainConfig, model, head_dim: int) -> None:
    from s3attn.models.taps import check_layers

    try:
        cfg.layers = check_layers(model, cfg.layers)
    except S3Error as err:
        raise S3Error(f"--layers {','.join(map(str, cfg.layers))}: {err}") from None
    latents = cfg.latents or cfg.expansion * head_dim
    if cfg.k <= 0 or cfg.k > latents:
        raise S3Error(
            f"--k {cfg.k}: must be between 1 and the number of latents ({latents}); lower --k or raise --latents"
        )
    if not 0 <= cfg.q_fraction < 1:
        raise S3Error(f"--q-fraction {cfg.q_fraction}: must be in [0, 1)")
    if cfg.sae_dtype not in ("float32", "bfloat16"):
        raise S3Error(f"--sae-dtype {cfg.sae_dtype}: choose float32 or bfloat16")
    if cfg.tokens < cfg.context_length:
        raise S3Error(f"--tokens {cfg.tokens}: below one context ({cfg.context_length} tokens)")


def check_out(out: Path) -> None:
    from s3attn.constants import RELEASE_CONFIG
    from s3attn.paths import check_writable_dir

    if out.exists() and not out.is_dir():
        raise S3Error(f"--out {out}: is a file; give a folder for the release")
    if out.is_dir() and any(out.iterdir()) and not (out / RELEASE_CONFIG).is_file():
        raise S3Error(f"--out {out}: holds files that are not an SAE release; choose an empty or new folder")
    check_writable_dir(out.parent if out.parent != Path("") else Path("."), "--out")


def weights_digest(module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.saes.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


class Run(NamedTuple):
    """A set-up training run."""

    trainer: Any  # lightning.Trainer
    module: Any  # SaeTrainer
    dm: Any  # the data module: the corpus, or the activation cache being read
    cache: Any  # ActivationCache | None
    reading_cache: bool
    state_path: Path
    contexts_per_rank: int
    world: int


def make_trainer(cfg: TrainConfig, run_dir: Path, state_path: Path, world: int):
    import lightning as L
    from lightning.pytorch.callbacks import TQDMProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    from s3attn.train.callbacks import PeriodicCheckpoint

    return L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy="ddp" if world > 1 else "auto",
        max_epochs=1,
        logger=TensorBoardLogger(str(run_dir), name="tb"),
        enable_checkpointing=False,
        callbacks=[PeriodicCheckpoint(state_path, cfg.checkpoint_every)]
        + ([TQDMProgressBar(refresh_rate=1)] if cfg.progress else []),
        enable_progress_bar=cfg.progress,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        enable_model_summary=False,
    )


def prepare(cfg: TrainConfig, corpus, docs: list, loaded, head_dim: int, run_dir: Path) -> Run:
    """Data, module and Trainer of a run whose options were checked against the loaded LM."""
    import lightning as L

    from s3attn.paths import check_writable_dir
    from s3attn.train.cache import ActivationCache
    from s3attn.train.data import CorpusDataModule
    from s3attn.train.module import SaeTrainer

    check_writable_dir(run_dir, "--run-dir")
    state_path = run_dir / "train_state.ckpt"
    if cfg.resume and not state_path.is_file():
        raise S3Error(f"--resume: no training state at {state_path}; run without --resume first")
    L.seed_everything(cfg.seed, verbose=False)
    world = cfg.devices * cfg.num_nodes
    contexts_per_rank = max(1, cfg.tokens // cfg.context_length // world)
    dm = CorpusDataModule(
        corpus,
        loaded.tokenizer,
        context_length=cfg.context_length,
        batch_size=cfg.lm_batch,
        contexts_per_rank=contexts_per_rank,
        holdout_every=cfg.holdout_every,
        holdout_contexts=cfg.holdout_contexts,
        seed=cfg.seed,
        docs=docs,
    )
    cache = ActivationCache.for_run(cfg, loaded.model_id, world) if cfg.cache_activations else None
    module = SaeTrainer(cfg, loaded.model, head_dim, cache_writer=cache)
    reading_cache = cache is not None and cache.complete
    if reading_cache:
        dm = cache.datamodule(dm)  # skip the LM: stream cached head vectors
    trainer = make_trainer(cfg, run_dir, state_path, world)
    return Run(trainer, module, dm, cache, reading_cache, state_path, contexts_per_rank, world)


def fit(run: Run, resume: bool, run_dir: Path) -> None:
    """Train; on Ctrl-C say where the last saved state is, then raise KeyboardInterrupt."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*IterableDataset.*")
        try:
            run.trainer.fit(run.module, datamodule=run.dm, ckpt_path=str(run.state_path) if resume else None)
        except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after its own cleanup
            if not run.trainer.interrupted:
                raise
            if run.state_path.is_file():
                print(
                    f"{PROG}: the training state saved last is in {run_dir}; continue with --resume",
                    file=sys.stderr,
                )
            raise KeyboardInterrupt from None


def save_state(run: Run, run_dir: Path) -> bool:
    """Save the final training state and record every rank's weights digest; True on rank 0."""
    if run.cache is not None:
        run.cache.flush()  # every rank; the all_gather below waits for all of them
    trainer = run.trainer
    trainer.save_checkpoint(str(run.state_path) + ".tmp", weights_only=False)
    kill_point("final-state-tmp")  # test-only hooks (s3attn.paths.kill_point)
    if trainer.global_rank == 0:
        os.replace(str(run.state_path) + ".tmp", run.state_path)
    digest = weights_digest(run.module)
    digests = [digest]
    if trainer.world_size > 1:
        import torch.distributed as dist

        digests = [None] * trainer.world_size
        dist.all_gather_object(digests, digest)
    if trainer.global_rank != 0:
        return False
    atomic_write_text(run_dir / "ranks.json", json.dumps({"weights_sha256": digests}, indent=2))
    kill_point("final-state")
    return True


def holdout_metrics(cfg: TrainConfig, run: Run) -> dict[int, dict[str, float]]:
    """FVU, L0 and dead fraction per layer on the held-out contexts (on CPU)."""
    import torch

    run.module.to(torch.device("cpu"))
    run.module.lm.to(torch.device("cpu"))
    holdout = run.cache.holdout_vectors(cfg.holdout_contexts) if run.reading_cache else None
    if holdout is None:
        holdout = run.module.holdout_vectors(run.dm.holdout_contexts_tensor())
    if run.cache is not None:
        run.cache.finish(holdout, cfg.holdout_contexts)
    return run.module.evaluate(holdout)


def release(cfg: TrainConfig, run: Run, model_id: str, head_dim: int, out: Path) -> Path:
    """Write the release of the trained SAEs with their held-out metrics."""
    from s3attn.saes.checkpoint import SaeMeta, write_release

    metrics = holdout_metrics(cfg, run)
    contexts_done = min(int(run.module.lm_steps) * cfg.lm_batch, run.contexts_per_rank)
    tokens_seen = contexts_done * cfg.context_length * run.world
    sites = ["k", "q"] if cfg.q_fraction > 0 else ["k"]
    metas = {
        layer: SaeMeta(
            model_id=model_id,
            layer=layer,
            sites=sites,
            head_dim=head_dim,
            training_tokens=tokens_seen,
            fvu=metrics.get(layer, {}).get("fvu"),
            dead_fraction=metrics.get(layer, {}).get("dead_fraction"),
        )
        for layer in cfg.layers
    }
    info = {
        "model_id": model_id,
        "dataset": cfg.dataset_name,
        "dataset_license": cfg.dataset_license,
        "context_length": cfg.context_length,
        "layers": list(cfg.layers),
        "q_fraction": cfg.q_fraction,
        "training_tokens": tokens_seen,
        "training_vectors_per_layer": int(run.module.vectors_seen),
        "holdout": {str(k): v for k, v in metrics.items()},
    }
    saes = {layer: run.module.saes[str(layer)] for layer in cfg.layers}
    path = write_release(out, saes, metas, info)
    print(f"{PROG}: wrote release {path}", file=sys.stderr)
    for layer, m in metrics.items():
        print(
            f"  layer {layer}: held-out FVU {m['fvu']:.4f}, L0 {m['l0']:.1f}, dead {m['dead_fraction']:.2%}",
            file=sys.stderr,
        )
    return path


def train(cfg: TrainConfig) -> Path:
    """Run training end to end; return the release folder."""
    from s3attn.corpus import Corpus

    out = Path(cfg.out)
    run_dir = Path(cfg.resolved_run_dir)
    check_out(out)
    corpus = Corpus(cfg.corpus, text_field=cfg.text_field, skip_bad=cfg.skip_bad_files, option="--corpus")
    docs = list(corpus)  # fail early on an empty or unreadable corpus, before the slow imports

    from s3attn.models.loading import load_model
    from s3attn.models.precision import accelerator_device, resolve_dtype
    from s3attn.models.taps import attention_geometry

    dtype = resolve_dtype(cfg.dtype, accelerator_device(cfg.accelerator))  # a bad --dtype before the load
    loaded = load_model(cfg.model, dtype=dtype)
    head_dim = attention_geometry(loaded.model).head_dim
    validate(cfg, loaded.model, head_dim)
    run = prepare(cfg, corpus, docs, loaded, head_dim, run_dir)
    fit(run, cfg.resume, run_dir)
    if not save_state(run, run_dir):
        return out
    return release(cfg, run, loaded.model_id, head_dim, out)


def export_main(argv: Sequence[str]) -> int:
    """``s3-train-sae export RELEASE --format saelens --out DIR``: write a release in another library's format."""
    import argparse

    from s3attn.saes.export import EXPORT_FORMATS, export_release

    parser = argparse.ArgumentParser(
        prog=f"{PROG} export",
        description="Export an SAE release for another library (saelens: one SAE.load_from_disk folder "
        "per layer and site, blocks.<L>.attn.hook_<k|q>).",
    )
    parser.add_argument("release", help="the release folder (config.json + layers.<L>/)")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="the target format")
    parser.add_argument("--out", required=True, help="folder to write (new, empty, or an earlier export)")
    parser.add_argument("--layers", default=None, help="comma-separated layers (default: all)")
    args = parser.parse_args(list(argv))
    try:
        layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    except ValueError:
        raise S3Error(f"--layers {args.layers}: expected comma-separated integers, e.g. 6,12") from None
    out = export_release(args.release, args.out, args.format, layers=layers)
    print(f"{PROG}: wrote {args.format} export {out}", file=sys.stderr)
    return 0


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    setup_cli_logging()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export"]:
        return export_main(argv[1:])
    if argv[:1] == ["query-map"]:
        from s3attn.train.query_map import query_map_main

        return query_map_main(argv[1:], PROG)
    cfg = parse_args(argv)
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
