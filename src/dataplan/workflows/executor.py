"""Running a sweep's independent points: one after another here, or as Ray tasks.

A sweep (curve budgets × seeds, scaling runs, probe seeds) is a list of jobs and a function of
one job. With ``--executor local`` the jobs run in this process, in order. With ``--executor
ray`` each job is a Ray task with ``--cpus-per-point`` CPUs and ``--gpus-per-point`` GPUs,
scheduled by Ray over the machine or cluster (never a scheduler of our own); results come back
as they finish, under one progress bar. A job writes its own result to the result store before
it returns, so a point whose worker died is simply run again (Ray retries it; a rerun of the
command finds every finished point cached). On a cluster the cache folder must be on a file
system every node sees.

A job function must not hold a loaded model (it would be shipped to every task): it loads the
model through :func:`worker_model`, which keeps one per worker process, or uses the model it is
given in local mode.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from dataplan.errors import ConfigError

if TYPE_CHECKING:
    from dataplan.models.loading import LoadedModel
    from dataplan.options import ExecutorOptions
    from dataplan.workflows.experiment import ModelSpec

J = TypeVar("J")
R = TypeVar("R")
log = logging.getLogger(__name__)

RETRIES = 3  # a task whose worker died runs again up to this many times [our choice]


def run_jobs(
    jobs: Sequence[J],
    work: Callable[[J], R],
    options: ExecutorOptions,
    *,
    desc: str,
    progress: bool = True,
) -> Iterator[tuple[J, R]]:
    """``(job, work(job))`` for every job: in order locally, as they finish under Ray."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit="point", disable=not progress or not jobs)
    if options.executor == "local" or not jobs:
        for job in jobs:
            yield job, work(job)
            bar.update(1)
        bar.close()
        return
    ray = _ray(options)
    task = ray.remote(
        num_cpus=options.cpus_per_point, num_gpus=options.gpus_per_point, max_retries=RETRIES
    )(_call)
    pending = {task.remote(work, job, options.cpus_per_point): job for job in jobs}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                yield job, ray.get(ref)
                bar.update(1)
    finally:
        for ref in pending:  # interrupted: do not leave tasks running for nothing
            ray.cancel(ref)
        bar.close()


def _call(work: Callable[[J], R], job: J, threads: int) -> R:
    """One Ray task: the job with as many torch threads as CPUs it was given."""
    import torch

    torch.set_num_threads(threads)
    return work(job)


def _ray(options: ExecutorOptions) -> Any:
    """The ``ray`` module, connected to ``--ray-address`` (or a local Ray started here)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'dataplan[ray]'") from None
    if not ray.is_initialized():
        ray.init(
            address=options.ray_address,
            ignore_reinit_error=True,
            include_dashboard=False,
            log_to_driver=False,
            # Workers inherit this process's environment (offline hub, thread counts).
            runtime_env={"env_vars": _worker_env()},
        )
        log.info("ray: %s", ray.cluster_resources())
    return ray


def _worker_env() -> dict[str, str]:
    keep = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "CUDA_VISIBLE_DEVICES")
    return {k: os.environ[k] for k in keep if k in os.environ}


@functools.lru_cache(maxsize=1)
def worker_model(spec: ModelSpec) -> LoadedModel:
    """The model of ``spec``, loaded once per worker process (Ray reuses its workers)."""
    return spec.load()


__all__ = ["run_jobs", "worker_model"]
