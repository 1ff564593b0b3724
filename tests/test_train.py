"""``s3-train-sae`` end to end on a tiny local Llama and a tiny corpus: release, exact resume, DDP, cache, errors.

Every run trains 16 LM steps (4096 tokens = 64 contexts of 64 tokens, 4 per step) of two 128-latent SAEs.
Torch runs single-threaded here: on a shared 2-core machine that is several times faster than two threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from conftest import TINY_WORDS, save_tiny_model_dir

from s3attn.constants import RELEASE_CARD, RELEASE_CONFIG, SAE_CFG, SAE_WEIGHTS
from s3attn.models.precision import accelerator_device, resolve_dtype
from s3attn.saes import SaeConfig, TopKSAE, load_many
from s3attn.train.cli import main, parse_args
from s3attn.train.config import TrainConfig

LAYERS = (1, 3)
TOKENS = 4096
CONTEXT = 64
LM_BATCH = 4
STEPS = TOKENS // CONTEXT // LM_BATCH  # 16 LM steps
PROG_ERROR = "s3-train-sae: error: "


class Env(NamedTuple):
    root: Path
    model: Path
    corpus: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("train")
    model = save_tiny_model_dir(root / "model", "llama")
    corpus = root / "corpus"
    corpus.mkdir()
    rng = random.Random(0)
    for i in range(3):  # ~6000 words: more than one pass of training contexts is never needed
        (corpus / f"doc{i}.txt").write_text(" ".join(rng.choice(TINY_WORDS) for _ in range(2000)) + "\n")
    yield Env(root, model, corpus)
    torch.set_num_threads(threads)


def cli_args(env: Env, out: Path, *extra: str, tokens: int = TOKENS, every: int = 4) -> list[str]:
    sizes = (
        f"--layers 1,3 --tokens {tokens} --context-length {CONTEXT} --lm-batch {LM_BATCH} --latents 128 --k 8 "
        f"--sae-batch 256 --buffer 2048 --holdout-contexts 2 --checkpoint-every {every} --no-progress"
    )
    return ["--model", str(env.model), "--corpus", str(env.corpus), "--out", str(out), *sizes.split(), *extra]


TRAIN_LM_DTYPE = resolve_dtype("auto", accelerator_device("auto"))  # bf16 on a CPU with AMX / AVX512-BF16


def release_weights(release: Path) -> dict[str, torch.Tensor]:
    return {
        f"{layer}.{name}": t
        for layer, sae in load_many(release).items()
        for name, t in sae.state_dict().items()
    }


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = release_weights(a), release_weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"{name} differs between {a} and {b}"


def digest_of(release: Path) -> str:
    """The digest ``ranks.json`` records (cli.weights_digest), recomputed from the written release."""
    h = hashlib.sha256()
    for name, tensor in sorted(release_weights(release).items()):
        h.update(name.encode())
        h.update(tensor.float().numpy().tobytes())
    return h.hexdigest()


def fvu(sae: TopKSAE, x: torch.Tensor) -> float:
    with torch.no_grad():
        err = (sae(x).sae_out - x).pow(2).sum()
    return float(err / (x - x.mean(0)).pow(2).sum())


def stderr_error_line(err: str) -> str:
    """The one ``s3-train-sae: error:`` line; no traceback around it."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(PROG_ERROR)]
    assert len(lines) == 1, err
    assert err.rstrip().splitlines()[-1] == lines[0], err  # the error is the last thing printed
    return lines[0]


@pytest.fixture(scope="module")
def full_run(env: Env) -> Path:
    """16 LM steps straight, with the training state saved after every step."""
    out = env.root / "full" / "rel"
    assert main(cli_args(env, out, every=1)) == 0
    return out


# ---- end to end ----------------------------------------------------------------------------------------
def test_release_written_loadable_and_trained(env: Env, full_run: Path) -> None:
    from s3attn.corpus import Corpus
    from s3attn.models.loading import load_model
    from s3attn.train.data import CorpusDataModule
    from s3attn.train.harvest import harvest

    for name in (
        RELEASE_CONFIG,
        RELEASE_CARD,
        *(f"layers.{layer}/{f}" for layer in LAYERS for f in (SAE_CFG, SAE_WEIGHTS)),
    ):
        assert (full_run / name).is_file(), name
    config = json.loads((full_run / RELEASE_CONFIG).read_text())
    assert config["layers"] == list(LAYERS) and config["k"] == 8 and config["num_latents"] == 128
    assert config["head_dim"] == 16 and config["sites"] == ["k", "q"] and config["training_tokens"] == TOKENS
    saes = load_many(full_run)
    assert sorted(saes) == list(LAYERS)

    # The recorded held-out FVU is the FVU of the written SAE on the held-out contexts' head vectors.
    loaded = load_model(str(env.model), dtype=TRAIN_LM_DTYPE)  # as s3-train-sae --dtype auto loads it
    dm = CorpusDataModule(
        Corpus(env.corpus),
        loaded.tokenizer,
        context_length=CONTEXT,
        batch_size=LM_BATCH,
        contexts_per_rank=1,
        holdout_every=50,
        holdout_contexts=2,
    )
    contexts = dm.holdout_contexts_tensor()
    assert contexts.shape == (2, CONTEXT)
    vectors = harvest(loaded.model, contexts, list(LAYERS), 0.5, torch.Generator().manual_seed(1))
    for layer in LAYERS:
        x = vectors[layer]
        assert x.shape == (2 * CONTEXT * 2 * 2, 16)  # keys of 2 KV heads + as many queries
        trained = fvu(saes[layer], x)
        assert config["holdout"][str(layer)]["fvu"] == pytest.approx(trained, rel=1e-4)
        assert saes[layer].meta.fvu == pytest.approx(trained, rel=1e-4)
        assert config["holdout"][str(layer)]["holdout_vectors"] == x.shape[0]
        torch.manual_seed(0)
        untrained = TopKSAE(SaeConfig(d_in=16, num_latents=128, k=8))
        untrained.init_b_dec(x)  # the same decoder-bias init training starts from, even on the test data
        assert trained < 0.75 * fvu(untrained, x)

    run_dir = full_run.parent / "rel.run"
    events = list((run_dir / "tb").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"fvu", "L1/fvu", "L3/fvu"} <= set(tags)
    curve = [e.value for e in acc.Scalars("L1/fvu")]
    assert len(curve) > 10 and curve[-1] < curve[0]
    assert json.loads((run_dir / "ranks.json").read_text())["weights_sha256"] == [digest_of(full_run)]


# ---- exact resume --------------------------------------------------------------------------------------
def test_resume_with_larger_budget_is_exact(env: Env, full_run: Path) -> None:
    out = env.root / "half" / "rel"
    assert main(cli_args(env, out, tokens=TOKENS // 2)) == 0  # stops after STEPS / 2 LM steps
    assert json.loads((out / RELEASE_CONFIG).read_text())["training_tokens"] == TOKENS // 2
    half = release_weights(out)
    assert not torch.equal(half["1.W_dec"], release_weights(full_run)["1.W_dec"])
    assert main(cli_args(env, out, "--resume")) == 0
    assert json.loads((out / RELEASE_CONFIG).read_text())["training_tokens"] == TOKENS
    assert_same_weights(out, full_run)


def test_resume_after_ctrl_c_mid_training_is_exact(env: Env, full_run: Path, monkeypatch, capsys) -> None:
    from s3attn.train.module import SaeTrainer

    out = env.root / "ctrl-c" / "rel"
    real_step = SaeTrainer.training_step

    def step_until_interrupted(self, batch, batch_idx):
        if int(self.lm_steps) == 6:  # the state was last saved after step 4 (--checkpoint-every 4)
            raise KeyboardInterrupt
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(SaeTrainer, "training_step", step_until_interrupted)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as exc:
            main(cli_args(env, out))
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning ignores further Ctrl-C once it caught one
    assert exc.value.code == 130
    assert "--resume" in capsys.readouterr().err
    assert not out.exists()
    state = torch.load(out.parent / "rel.run" / "train_state.ckpt", weights_only=False)
    assert int(state["state_dict"]["lm_steps"]) == 4
    monkeypatch.setattr(SaeTrainer, "training_step", real_step)
    assert main(cli_args(env, out, "--resume")) == 0
    assert_same_weights(out, full_run)


def test_interrupted_release_writes_nothing_and_resume_finishes(
    env: Env, full_run: Path, monkeypatch, capsys
) -> None:
    import s3attn.saes.checkpoint as checkpoint

    out = env.root / "crash" / "rel"
    real_save, calls = checkpoint.save_file, []

    def save_then_interrupt(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:  # the second layer's weights: the first is already on disk
            raise KeyboardInterrupt
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", save_then_interrupt)
    with pytest.raises(SystemExit) as exc:
        main(cli_args(env, out))
    assert exc.value.code == 130
    assert len(calls) == 2
    assert sorted(os.listdir(out.parent)) == ["rel.run"]  # no release, no temp folder beside it
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.setattr(checkpoint, "save_file", real_save)
    # The training state saved after the last step lets --resume write the release without training more.
    assert main(cli_args(env, out, "--resume")) == 0
    assert_same_weights(out, full_run)


# ---- DDP -----------------------------------------------------------------------------------------------
def run_subprocess(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own session; on timeout kill the whole group (Lightning starts more ranks)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{cmd[:4]} timed out after {timeout} s; stderr tail:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_ddp_two_cpu_ranks_end_identical(env: Env) -> None:
    out = env.root / "ddp" / "rel"
    cmd = [
        sys.executable,
        "-m",
        "s3attn.train.cli",
        *cli_args(env, out),
        "--devices",
        "2",
        "--accelerator",
        "cpu",
    ]
    proc = run_subprocess(cmd, env.root, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    digests = json.loads((out.parent / "rel.run" / "ranks.json").read_text())["weights_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert digest_of(out) == digests[0]
    config = json.loads((out / RELEASE_CONFIG).read_text())
    assert config["training_tokens"] == TOKENS  # 2 ranks x 32 contexts x 64 tokens
    assert config["training_vectors_per_layer"] > 0 and config["holdout"]["1"]["fvu"] < 1.0


# ---- activation cache ----------------------------------------------------------------------------------
def test_activation_cache_written_then_reused_without_the_lm(env: Env, monkeypatch) -> None:
    import zarr

    import s3attn.train.harvest as harvest_mod
    from s3attn.corpus import Corpus
    from s3attn.models.loading import load_model
    from s3attn.train.data import ContextStream

    cache = env.root / "acts"
    first = env.root / "cache1" / "rel"
    assert main(cli_args(env, first, "--cache-activations", str(cache))) == 0
    group = zarr.open_group(str(cache), mode="r")
    assert group.attrs["complete"] is True
    rows = group.attrs["rows_per_step"]
    assert rows == LM_BATCH * CONTEXT * 2 * 2
    assert group["rank0/L1"].shape == (STEPS * rows, 16)
    # The cached rows of the first step are the head vectors of the first training batch.
    loaded = load_model(str(env.model), dtype=TRAIN_LM_DTYPE)  # as s3-train-sae --dtype auto loads it
    stream = ContextStream(
        list(Corpus(env.corpus)),
        loaded.tokenizer,
        context_length=CONTEXT,
        holdout_every=50,
        split="train",
        limit=LM_BATCH,
    )
    batch = torch.stack(list(stream))
    fresh = harvest_mod.harvest(loaded.model, batch, list(LAYERS), 0.5, torch.Generator().manual_seed(0))
    for layer in LAYERS:
        assert torch.equal(torch.from_numpy(group[f"rank0/L{layer}"][:rows]), fresh[layer])

    def no_lm(*args, **kwargs):
        raise AssertionError("the LM ran although the activation cache is complete")

    monkeypatch.setattr(harvest_mod, "tap_heads", no_lm)
    second = env.root / "cache2" / "rel"
    assert main(cli_args(env, second, "--cache-activations", str(cache), "--k", "4")) == 0
    saes = load_many(second)
    assert {layer: sae.cfg.k for layer, sae in saes.items()} == {1: 4, 3: 4}
    holdout = json.loads((second / RELEASE_CONFIG).read_text())["holdout"]
    assert 0 < holdout["1"]["fvu"] < 1 and holdout["1"]["l0"] <= 4


# ---- bad input -----------------------------------------------------------------------------------------
def test_missing_corpus_console_script(env: Env, tmp_path: Path) -> None:
    script = shutil.which("s3-train-sae")
    cmd = [script] if script else [sys.executable, "-m", "s3attn.train.cli"]
    missing = tmp_path / "no-such-corpus"
    args = cli_args(env, tmp_path / "rel")
    args[args.index("--corpus") + 1] = str(missing)
    proc = run_subprocess([*cmd, *args], tmp_path, timeout=120)
    assert proc.returncode == 2
    line = stderr_error_line(proc.stderr)
    assert str(missing) in line and "--corpus" in line
    assert not (tmp_path / "rel").exists()


def _corpus_of(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


BAD_BYTES = b"the king of france " * 5 + b"caf\xe9 " + b"the queen " * 5  # latin-1, not UTF-8
BAD_OFFSET = BAD_BYTES.index(b"\xe9")


def _input_case(name: str, tmp: Path, set_opt) -> tuple[list[str], list[str]] | None:
    """(extra argv, substrings the error line must hold) of a bad corpus, model or option value."""
    if name == "empty-corpus":
        set_opt("--corpus", str(_corpus_of(tmp / "empty", {})))
        return [], ["--corpus", "no documents"]
    if name == "not-utf8":
        corpus = _corpus_of(tmp / "c", {"bad.txt": BAD_BYTES})
        set_opt("--corpus", str(corpus))
        return [], [str(corpus / "bad.txt"), "not UTF-8", f"offset {BAD_OFFSET}", "--skip-bad-files"]
    if name == "layer-beyond-depth":
        set_opt("--layers", "99")
        return [], ["--layers 99", "beyond", "4 layers"]
    if name == "k-above-latents":
        set_opt("--k", "200")
        return [], ["--k 200", "128"]
    if name == "unknown-model":
        set_opt("--model", "no-such-model-xyz")
        return [], ["no-such-model-xyz"]
    if name == "bad-int":
        set_opt("--tokens", "many")
        return [], ["--tokens 'many'"]
    return None


def _state_case(name: str, tmp: Path, set_opt) -> tuple[list[str], list[str]] | None:
    """(extra argv, substrings the error line must hold) of a bad output folder, state or config file."""
    if name == "out-under-a-file":
        (tmp / "plain").write_text("x")
        set_opt("--out", str(tmp / "plain" / "rel"))
        return [], ["--out", str(tmp / "plain")]
    if name == "out-not-a-release":
        (tmp / "stuff").mkdir()
        (tmp / "stuff" / "notes.txt").write_text("mine")
        set_opt("--out", str(tmp / "stuff"))
        return [], ["--out", "not an SAE release"]
    if name == "resume-without-state":
        return ["--resume"], ["--resume", "no training state"]
    if name == "unknown-config-key":
        (tmp / "c.yaml").write_text("k: 8\nlayerz: [1]\n")
        return ["--config", str(tmp / "c.yaml")], ["--config", "layerz"]
    return None


def _case(name: str, env: Env, tmp: Path) -> tuple[list[str], list[str]]:
    """(argv, substrings the error line must hold) for one kind of bad input."""
    out = tmp / "rel"
    args = cli_args(env, out)

    def set_opt(opt: str, value: str) -> None:
        args[args.index(opt) + 1] = value

    found = _input_case(name, tmp, set_opt) or _state_case(name, tmp, set_opt)
    if found is None:
        raise AssertionError(name)
    extra, expected = found
    return [*args, *extra], expected


@pytest.mark.parametrize(
    "case",
    [
        "empty-corpus",
        "not-utf8",
        "layer-beyond-depth",
        "k-above-latents",
        "unknown-model",
        "out-under-a-file",
        "out-not-a-release",
        "resume-without-state",
        "unknown-config-key",
        "bad-int",
    ],
)
def test_bad_input_exits_2_with_one_line(env: Env, tmp_path: Path, capsys, case: str) -> None:
    args, expected = _case(case, env, tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    line = stderr_error_line(capsys.readouterr().err)
    for part in expected:
        assert part in line, (part, line)
    assert not (tmp_path / "rel" / RELEASE_CONFIG).exists()
    if case == "out-not-a-release":
        assert sorted(os.listdir(tmp_path / "stuff")) == ["notes.txt"]  # left alone


@pytest.mark.parametrize("opt, value", [("--dtype", "bf16"), ("--sae-dtype", "float16")])
def test_bad_precision_exits_2_with_one_line(env: Env, tmp_path: Path, capsys, opt: str, value: str) -> None:
    """--dtype is the LM's precision (auto, bfloat16, float16, float32), --sae-dtype the SAE's."""
    with pytest.raises(SystemExit) as exc:
        main([*cli_args(env, tmp_path / "rel"), opt, value])
    assert exc.value.code == 2
    line = stderr_error_line(capsys.readouterr().err)
    assert f"{opt} {value}: choose" in line and "bfloat16" in line, line
    assert not (tmp_path / "rel" / RELEASE_CONFIG).exists()


def test_skip_bad_files_warns_and_skips(env: Env, tmp_path: Path, capsys) -> None:
    corpus = _corpus_of(tmp_path / "c", {"bad.txt": BAD_BYTES})
    args = cli_args(env, tmp_path / "rel", "--skip-bad-files")
    args[args.index("--corpus") + 1] = str(corpus)
    with pytest.raises(SystemExit) as exc:  # the only file is skipped, so nothing is left to train on
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert any(
        line.startswith("warning: skipping") and str(corpus / "bad.txt") in line for line in err.splitlines()
    )
    assert "no documents" in stderr_error_line(err)


# ---- options: --help, --config -------------------------------------------------------------------------
def test_help_lists_every_option_with_its_docstring(monkeypatch, capsys) -> None:
    import dataclasses

    from s3attn.config import field_docs

    monkeypatch.setenv("COLUMNS", "1000")  # one line per option, so the text is not wrapped
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    docs = field_docs(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
        assert docs.get(f.name), f"{f.name} has no docstring"
        assert docs[f.name] in text, f.name
    assert "--layer " in text and "--config FILE" in text and "--no-resume" in text


def test_config_file_overrides_defaults_and_options_override_it(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(
        "k: 16\nlayers: [2, 5]\ncontext-length: 128\nlr: null\nprogress: false\nq_fraction: 0.25\n"
    )
    cfg = parse_args(["--config", str(path), "--k", "4"])
    assert cfg.k == 4  # the command line wins over the file
    assert cfg.layers == [2, 5] and cfg.context_length == 128 and cfg.lr is None
    assert cfg.progress is False and cfg.q_fraction == 0.25
    assert cfg.tokens == TrainConfig().tokens  # untouched options keep their defaults
    assert parse_args(["--layer", "7"]).layers == [7]
