"""Sharding work across processes started by ``torchrun`` (``torch.distributed``).

Under ``torchrun`` every process sees ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; :func:`world`
joins the process group (NCCL with GPUs, else Gloo) the first time it is needed. A pass over N
examples is cut into fixed shards; rank r takes shards r, r + W, r + 2W, … and the results are
gathered with ``all_gather_object`` so that every rank ends with all of them. Without
``torchrun`` the world is one process and nothing changes.

:func:`sharded_pass` is the one way a pool-wide pass runs: shards cut independently of the
number of processes, each shard an entry of the result store (computed once, by one rank, and
redone on a rerun only if it is missing — a killed rank loses at most its unfinished shards),
gathered in order. A pass computes the same numbers whether one process or several run it.
Every rank must call it (it is a collective); only rank 0 should write the run's outputs
(:func:`is_main`).
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np

if TYPE_CHECKING:
    from dataplan.store import ResultStore

T = TypeVar("T")

# Ranks wait in all_gather_object while the slowest finishes its shards; the default timeouts
# (10 min NCCL, 30 min Gloo) would kill a long scoring pass [our choice: 6 hours].
COLLECTIVE_TIMEOUT = timedelta(hours=6)


def world() -> tuple[int, int]:
    """``(rank, world_size)``, joining the ``torchrun`` process group if there is one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and "torch" not in sys.modules:
        return 0, 1  # one process and no torch yet: no group can exist (keeps --help fast)
    import torch
    import torch.distributed as dist

    joined = dist.is_available() and dist.is_initialized()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not joined:
        if torch.cuda.is_available():
            # Each process its own GPU before NCCL starts, or every rank lands on cuda:0.
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(
            backend="nccl" if torch.cuda.is_available() else "gloo",
            timeout=COLLECTIVE_TIMEOUT,
        )
        atexit.register(_leave_group)
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _leave_group() -> None:
    """Leave the process group at exit, as PyTorch asks: a group left to the interpreter's
    teardown can abort the process ("terminate called without an active exception", seen once
    in CI after a Gloo run had printed its result)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    """Whether this process writes outputs: rank 0, or the only process."""
    return world()[0] == 0


def local_device(device: str = "auto") -> str:
    """Under ``torchrun`` with GPUs, ``auto`` or ``cuda`` mean ``cuda:<LOCAL_RANK>``."""
    import torch

    if device in ("auto", "cuda") and "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast(value: T) -> T:
    """Rank 0's ``value`` on every rank (e.g. a run folder named by the time); as is alone."""
    import torch.distributed as dist

    if world()[1] == 1:
        return value
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return cast(T, box[0])


def shard_ranges(n: int, shard_size: int, world_size: int = 1) -> list[range]:
    """``[0, s), [s, 2s), …`` covering ``range(n)``; with several processes the size shrinks
    to ``ceil(n / world_size)`` if needed so that every process gets a shard."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    size = min(shard_size, max(1, -(-n // max(1, world_size))))
    return [range(start, min(n, start + size)) for start in range(0, n, size)]


def run_sharded(
    shards: Sequence[T],
    work: Callable[[int, T], Any],
    *,
    cached: Callable[[int], Any | None] | None = None,
) -> list[Any]:
    """Run ``work(i, shard)`` for this rank's shards and gather every shard's result in order.

    ``cached(i)`` may return a stored result to skip the work (resume after a crash).
    """
    import torch.distributed as dist

    rank, size = world()
    mine: dict[int, Any] = {}
    for i in range(rank, len(shards), size):
        found = cached(i) if cached is not None else None
        mine[i] = found if found is not None else work(i, shards[i])
    if size == 1:
        return [mine[i] for i in range(len(shards))]
    gathered: list[dict[int, Any] | None] = [None] * size
    dist.all_gather_object(gathered, mine)
    merged: dict[int, Any] = {}
    for part in gathered:
        merged.update(part or {})
    return [merged[i] for i in range(len(shards))]


def gather_rows(n: int, work: Callable[[range], np.ndarray]) -> np.ndarray:
    """``work(range(n))`` computed across the processes: each rank computes one contiguous block
    of rows and every rank gets them all, in order. Alone: one call on every row. Every rank
    must call it (it gathers)."""
    if n == 0:
        return np.zeros(0)
    size = world()[1]
    blocks = shard_ranges(n, -(-n // size), size)
    return np.concatenate([np.asarray(p) for p in run_sharded(blocks, lambda _, r: work(r))])


def sharded_pass(
    n: int,
    work: Callable[[int, range], Mapping[str, Any]],
    *,
    store: ResultStore,
    name: str,
    shard_size: int,
) -> dict[str, Any]:
    """Columns of ``work`` over ``range(n)``, shard by shard, concatenated in order.

    Args:
        n: items in the pass (rows of every column).
        work: ``work(i, items)`` maps shard ``i`` (of ``ceil(n / shard_size)``) to its columns:
            arrays with one row per item, or lists of strings. It shows its own progress (on
            rank 0: :func:`is_main`).
        store: where each finished shard is kept (``<name>-<shard size>-<i>``).
        name: the pass's name in the store; its settings must be part of the store's identity
            (e.g. a run folder) or of ``name``.
        shard_size: items per shard: the unit of resume and of work across ranks (cut the same
            whatever the number of ranks, so that results do not depend on it).

    Returns:
        name → the concatenated column (an array, or a list of strings).
    """
    from dataplan.store import ShardCache

    if n == 0:
        return {}
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    shards = [range(a, min(n, a + shard_size)) for a in range(0, n, shard_size)]
    cache = ShardCache(store, name, shards)
    parts = run_sharded(shards, lambda i, r: cache.put(i, work(i, r)), cached=cache.get)
    out: dict[str, Any] = {}
    for key in parts[0]:
        if isinstance(parts[0][key], list):
            out[key] = [v for p in parts for v in p[key]]
        else:
            out[key] = np.concatenate([np.asarray(p[key]) for p in parts])
    return out


__all__ = [
    "barrier",
    "broadcast",
    "gather_rows",
    "is_main",
    "local_device",
    "run_sharded",
    "shard_ranges",
    "sharded_pass",
    "world",
]
