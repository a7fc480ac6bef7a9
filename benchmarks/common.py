"""Shared benchmark plumbing: run each variant in its own process, measure time and peak memory.

Every variant runs in a fresh spawned process so its peak resident memory (``ru_maxrss``) is its
own; model loading is excluded from the timing. Results are printed side by side and written as
JSON (atomically) next to the script, under ``benchmarks/results/``.
"""

from __future__ import annotations

import multiprocessing as mp
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def _child(fn: Callable[..., Any], kwargs: dict[str, Any], threads: int, queue) -> None:
    import torch

    torch.set_num_threads(threads)
    setup_start = time.perf_counter()
    state = fn(phase="setup", **kwargs)
    setup = time.perf_counter() - setup_start
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    output = fn(phase="run", state=state, **kwargs)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put(
        {
            "seconds": seconds,
            "setup_seconds": setup,
            "peak_rss_mb": peak / 1024,
            "rss_after_setup_mb": rss_before / 1024,
            "output": output,
        }
    )


def measure(fn: Callable[..., Any], *, threads: int, **kwargs: Any) -> dict[str, Any]:
    """Run ``fn(phase="setup")`` then time ``fn(phase="run", state=...)`` in a fresh process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, kwargs, threads, queue))
    proc.start()
    import queue as queues

    while True:  # a child that dies never puts a result: do not wait for it forever
        try:
            result = queue.get(timeout=5)
            break
        except queues.Empty:
            if not proc.is_alive():
                raise RuntimeError(
                    f"benchmark process failed with exit code {proc.exitcode}"
                ) from None
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"benchmark process failed with exit code {proc.exitcode}")
    return result


def machine() -> dict[str, Any]:
    import os

    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }


def save(name: str, payload: dict[str, Any]) -> Path:
    from dataplan.io import write_json

    path = RESULTS / f"{name}.json"
    write_json(path, payload)
    return path
