"""Ranks of a build on several devices and nodes, and the plan rank 0 hands to the others.

One node, ``--devices N``: Lightning starts the other N-1 processes itself once rank 0 reaches the prefill
(rank 0 has opened the index by then, so they read from it which documents it lacks). Several nodes
(``--num-nodes M``): a cluster launcher starts every process at once (torchrun with ``--nproc-per-node N``
or ``srun --ntasks-per-node N``; the environment names the ranks: ``RANK``, or ``SLURM_PROCID``, or
``NODE_RANK`` x N + ``LOCAL_RANK``), so rank 0 first prepares the index (creates it, or drops the open tail
of a killed build) and then tells the others which documents to index: :func:`share_plan` joins the
process group early (gloo, ``MASTER_ADDR`` / ``MASTER_PORT``), which Lightning then uses as it is.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os

logger = logging.getLogger(__name__)

PLAN_TIMEOUT_S = 1800
"""How long a rank waits for the others to join (rank 0 may first drop a killed build's open tail)."""


def global_rank(num_nodes: int, devices: int) -> int:
    """This process's global rank, as Lightning computes it: ``RANK`` (torchrun), else ``SLURM_PROCID``
    (srun), else ``NODE_RANK`` (or ``GROUP_RANK``) x devices + ``LOCAL_RANK``; 0 for a plain process."""
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"])
    if num_nodes > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"])
    node = int(env.get("NODE_RANK", env.get("GROUP_RANK", 0)))
    return node * int(devices) + int(env.get("LOCAL_RANK", 0))


def world_size(num_nodes: int, devices: int) -> int:
    """Number of ranks of the build: nodes x devices per node."""
    return max(1, int(num_nodes)) * max(1, int(devices))


def share_plan(plan: list[int] | None, rank: int, world: int) -> list[int]:
    """Rank 0's ``plan`` (indexes of the documents to index) on every rank: joins the default process group
    (gloo, ``env://``: ``MASTER_ADDR``, ``MASTER_PORT``) unless one exists, then broadcasts it."""
    import torch.distributed as dist

    if not dist.is_initialized():
        logger.info("rank %d of %d: joining the process group", rank, world)
        dist.init_process_group(
            "gloo",
            init_method="env://",
            rank=rank,
            world_size=world,
            timeout=_dt.timedelta(seconds=PLAN_TIMEOUT_S),
        )
    box = [plan if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return list(box[0] or [])


def barrier() -> None:
    """Wait for every rank (after Lightning's run, whose process group stays up); nothing with one rank."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
