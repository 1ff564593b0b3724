"""``s3-train-sae`` survives SIGKILL: five kills at seeded random points of the run, one of them during the
release write, each followed by ``--resume``, end with the weights of an uninterrupted run.

The kills are real SIGKILLs of the console script, delivered by the process to itself at named points through
the test-only hook ``s3attn.paths.kill_point`` (``S3ATTN_TEST_KILL_AT=<point>:<n>``), so they land exactly
where the test says (no timing). Sizes, model and corpus are those of test_train.py (16 LM steps).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import test_train
import torch
from test_train import STEPS, Env, cli_args, digest_of, run_subprocess

from s3attn.constants import RELEASE_CARD, RELEASE_CONFIG, SAE_CFG, SAE_WEIGHTS
from s3attn.paths import KILL_ENV
from s3attn.saes import load_many
from s3attn.train.cli import main

EVERY = 2  # --checkpoint-every: the state is saved after every second LM step
SEED = 16
RELEASE_POINTS = [("release-layer", 1), ("release-layer", 2), ("release-publish", 1)]
env = test_train.env  # the tiny model and corpus (module fixtures)
full_run = test_train.full_run  # the uninterrupted run


def progress_points() -> list[tuple[str, int]]:
    """Every hook point an uninterrupted run passes, in order: (point, n) as S3ATTN_TEST_KILL_AT takes it."""
    points = []
    for step in range(1, STEPS + 1):
        if step % EVERY == 0:
            points.append(("state-tmp", step))  # state written to its temp name, not yet renamed
        points.append(("step", step))  # LM step done (and its state saved, when due)
    return [*points, ("final-state-tmp", 1), ("final-state", 1), *RELEASE_POINTS]


def kill_points(seed: int) -> list[tuple[str, int]]:
    """Five distinct points after the first saved state (``--resume`` needs one), in progress order: one
    within training, one while the state is written, one at its end, one in the release write, one anywhere."""
    points = progress_points()
    eligible = points[points.index(("step", EVERY)) :]
    rng = random.Random(seed)
    chosen = [
        rng.choice([p for p in eligible if p[0] == "step"]),
        rng.choice([p for p in eligible if p[0] == "state-tmp"]),
        rng.choice([p for p in eligible if p[0].startswith("final-")]),
        rng.choice(RELEASE_POINTS),
    ]
    chosen.append(rng.choice([p for p in eligible if p not in chosen]))
    return sorted(chosen, key=points.index)


def saved_step(point: tuple[str, int]) -> int:
    """The LM step of the training state on disk after a kill at ``point``."""
    name, n = point
    if name == "state-tmp":
        return n - EVERY
    if name == "step":
        return n - n % EVERY
    return STEPS


def assert_no_partial_release(out: Path) -> None:
    """``out`` is absent or a complete, loadable release; any other folder beside it is hidden."""
    if out.exists():
        config = json.loads((out / RELEASE_CONFIG).read_text())
        assert (out / RELEASE_CARD).is_file()
        for layer in config["layers"]:
            for name in (SAE_CFG, SAE_WEIGHTS):
                assert (out / f"layers.{layer}" / name).is_file(), (layer, name)
        assert sorted(load_many(out)) == config["layers"]
    others = {p.name for p in out.parent.iterdir()} - {out.name, f"{out.name}.run"}
    assert all(name.startswith(f".{out.name}.tmp-") for name in others), others


def kill_at(env: Env, out: Path, point: tuple[str, int], resume: bool, monkeypatch) -> None:
    script = shutil.which("s3-train-sae")
    cmd = [script] if script else [sys.executable, "-m", "s3attn.train.cli"]
    cmd += cli_args(env, out, *(["--resume"] if resume else []), every=EVERY)
    with monkeypatch.context() as m:  # only the child sees the hook: this process must never kill itself
        m.setenv(KILL_ENV, f"{point[0]}:{point[1]}")
        proc = run_subprocess(cmd, env.root, timeout=300)
    assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, proc.stderr[-3000:])


def check_after_kill(out: Path, point: tuple[str, int]) -> None:
    assert_no_partial_release(out)
    assert not out.exists(), point  # every kill point lies before the release is moved into place
    state = torch.load(out.parent / "rel.run" / "train_state.ckpt", weights_only=False)
    assert int(state["state_dict"]["lm_steps"]) == saved_step(point), point
    temps = [p for p in out.parent.iterdir() if p.name.startswith(".rel.tmp-")]
    if point[0].startswith("release-"):  # killed inside the release write: its temp folder is half done
        assert len(temps) == 1, (point, temps)
        assert (temps[0] / "layers.1" / SAE_WEIGHTS).is_file()
        assert (temps[0] / RELEASE_CONFIG).is_file() == (point[0] == "release-publish")


def test_kill_points_are_seeded_and_one_is_in_the_release_write() -> None:
    points = kill_points(SEED)
    assert points == kill_points(SEED) and len(set(points)) == 5
    assert any(p in RELEASE_POINTS for p in points)
    assert all(saved_step(p) >= EVERY for p in points)


def test_sigkill_at_five_points_then_resume_is_exact(env: Env, full_run: Path, monkeypatch) -> None:
    out = env.root / "killed" / "rel"
    points = kill_points(SEED)
    for i, point in enumerate(points):
        kill_at(env, out, point, resume=i > 0, monkeypatch=monkeypatch)
        check_after_kill(out, point)
    assert main(cli_args(env, out, "--resume", every=EVERY)) == 0
    assert_no_partial_release(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["rel", "rel.run"], "a temp folder was left"
    assert digest_of(out) == digest_of(full_run), points
    ranks = json.loads((out.parent / "rel.run" / "ranks.json").read_text())
    assert ranks["weights_sha256"] == [digest_of(full_run)]


def test_temp_folders_of_killed_writers_are_removed(tmp_path: Path) -> None:
    from s3attn.paths import fresh_temp_dir, publish_dir

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    out = tmp_path / "rel"
    (tmp_path / f".rel.tmp-{gone.pid}").mkdir()  # a writer that was SIGKILLed
    (tmp_path / f".rel.tmp-{os.getppid()}").mkdir()  # a live one (pytest's parent)
    (tmp_path / ".rel.old").mkdir()  # a publish killed between its two renames
    tmp = fresh_temp_dir(out)
    assert tmp.name == f".rel.tmp-{os.getpid()}" and not tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".rel.old", f".rel.tmp-{os.getppid()}"]
    tmp.mkdir()
    (tmp / RELEASE_CONFIG).write_text("{}")
    publish_dir(tmp, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".rel.tmp-{os.getppid()}", "rel"]
    assert (out / RELEASE_CONFIG).read_text() == "{}"
