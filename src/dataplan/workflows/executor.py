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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from dataplan.errors import ConfigError

if TYPE_CHECKING:
    from dataplan.models.loading import LoadedModel
    from dataplan.options import ExecutorOptions
    from dataplan.store import ResultStore
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


@dataclass(frozen=True)
class Point(Generic[J]):
    """One point of a sweep: its result-store entry (``name``, ``key``) and what computes it."""

    name: str
    key: dict[str, Any]
    job: J


class SweepConfig(Protocol):
    """What :func:`sweep` reads of a command's config (ExecutorOptions + ModelOptions)."""

    executor: str
    device: str

    @property
    def spec(self) -> ModelSpec: ...


def sweep(
    points: Sequence[Point[J]],
    compute: Callable[[LoadedModel, J], dict[str, Any]],
    store: ResultStore,
    cfg: SweepConfig,
    *,
    loaded: LoadedModel | None = None,
    desc: str,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Every point's result by name: cached ones read, the others computed and stored.

    Under ``torchrun`` rank 0's view of what is cached is every rank's (each rank takes part in
    every DDP fine-tune or in none) and rank 0 alone writes. Missing points run here, in order
    (``--executor local``, on ``loaded`` or the model loaded once for them), or as Ray tasks,
    each on its worker's model (:func:`worker_model`); ``compute`` must then be picklable (a
    module-level function or a ``functools.partial`` of one). A point is written before its job
    returns, so an interrupted sweep resumes where it stopped.
    """
    from dataplan.compute.distributed import broadcast, is_main, local_device, world

    found: dict[str, dict[str, Any]] = broadcast(
        {p.name: r for p in points if (r := store.get_json(p.name, p.key)) is not None}
    )
    todo = [p for p in points if p.name not in found]
    if todo and cfg.executor == "ray" and world()[1] > 1:
        raise ConfigError("--executor ray starts its own workers: do not launch it with torchrun")
    if todo and cfg.executor == "local":
        loaded = loaded or cfg.spec.load(device=local_device(cfg.device))
    work = functools.partial(
        _compute_point, compute, store, cfg.spec, loaded if cfg.executor == "local" else None
    )
    for point, result in run_jobs(todo, work, cast("ExecutorOptions", cfg), desc=desc,
                                  progress=progress and is_main()):  # fmt: skip
        found[point.name] = result
    return found


def _compute_point(
    compute: Callable[[LoadedModel, J], dict[str, Any]],
    store: ResultStore,
    spec: ModelSpec,
    loaded: LoadedModel | None,
    point: Point[J],
) -> dict[str, Any]:
    """One point, written to the store (by rank 0) before it returns."""
    from dataplan.compute.distributed import is_main

    if loaded is None:  # a Ray worker: it resolves auto itself, perhaps not as the driver did
        _check_runtime(spec, point.key)
    result = compute(loaded or worker_model(spec), point.job)
    return store.put_json(point.name, point.key, result) if is_main() else result


def _check_runtime(spec: ModelSpec, key: dict[str, Any]) -> None:
    """Refuse to compute a point whose key names another device or dtype than this process
    resolves (a CPU driver keys ``--device auto`` as cpu, a GPU worker would run cuda): its
    result would be cached under settings it was not made with."""
    from dataplan.errors import ConfigError
    from dataplan.store import runtime

    here = runtime(spec.device, spec.dtype)
    keyed = {k: key[k] for k in here if k in key}
    if keyed and keyed != {k: here[k] for k in keyed}:
        raise ConfigError(
            f"a Ray worker resolves --device {spec.device} --dtype {spec.dtype} to "
            f"{here['device']}/{here['dtype']}, the driver to {keyed.get('device')}/"
            f"{keyed.get('dtype')}: give --device and --dtype explicitly"
        )


__all__ = ["Point", "run_jobs", "sweep", "worker_model"]
