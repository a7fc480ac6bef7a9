"""``dataplan scaling runs``: fine-tune at each (N, subsampling strategy) under a compute budget.

Subsampling strategies of the training pool (token length = prompt + answer + end tokens):

- ``random``: a seeded random sample of N;
- ``shortest`` / ``longest``: the N shortest / longest examples (ties in pool order);
- ``stratified``: the pool sorted by length, cut into N equal strata, one example drawn from
  each with the seed — the pool's length distribution in miniature.

Under a compute budget C (training tokens) the number of optimiser steps is
``ceil(C / (min(batch_size, N) · L̄))`` [our choice], so every run sees about C tokens whatever N and L̄;
without one, the curve's steps rule applies. ``tokens_seen = steps · min(batch_size, N) · W · L̄``
(W processes under torchrun) and
``epochs = tokens_seen / (N · L̄)``; a run below one epoch never sees part of its subset (its
volume overstates the data used), which is logged as a warning.
Each run is cached and resumable like ``dataplan curve`` (same machinery); the runs file has
one row per run: ``task, strategy, seed, n_examples, mean_tokens, tokens_seen, model_params,
pool_size, epochs, performance, metric`` and the other metrics.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from dataplan.compute.distributed import is_main, local_device, world
from dataplan.data.formatting import PromptFormatter
from dataplan.data.loading import Example
from dataplan.errors import ConfigError
from dataplan.evaluation import headline_metric
from dataplan.options import (
    DataOptions,
    ExecutorOptions,
    ModelOptions,
    PromptOptions,
    RunOptions,
    cli,
    group_values,
    ints,
    names,
)
from dataplan.training.settings import TrainSettings
from dataplan.workflows.curve import CurveConfig, load_splits, point_settings, point_store
from dataplan.workflows.executor import Point, sweep
from dataplan.workflows.experiment import train_and_evaluate

STRATEGIES = ("random", "shortest", "longest", "stratified")
if TYPE_CHECKING:
    from dataplan.models.loading import LoadedModel

log = logging.getLogger(__name__)


def token_lengths(formatter: PromptFormatter, examples: list[Example]) -> np.ndarray:
    """Training tokens of each example: prompt + answer + end-of-turn."""
    return np.array(  # a training pool: loaded with require_answer, every answer is a string
        [
            len(formatter.encode(e.prompt, cast(str, e.answer)).input_ids(with_end=True))
            for e in examples
        ]
    )


def subsample(lengths: np.ndarray, n: int, strategy: str, seed: int) -> np.ndarray:
    """Indices of the N examples a strategy picks (see module docstring)."""
    if not 0 < n <= lengths.size:
        raise ConfigError(f"N = {n} is outside the pool of {lengths.size}")
    rng = np.random.default_rng([seed, 5])
    order = np.argsort(lengths, kind="stable")
    if strategy == "random":
        return np.sort(rng.choice(lengths.size, size=n, replace=False))
    if strategy == "shortest":
        return order[:n]
    if strategy == "longest":
        return order[::-1][:n]
    if strategy == "stratified":
        edges = np.linspace(0, lengths.size, n + 1).astype(int)
        return np.array([order[rng.integers(lo, hi)] for lo, hi in itertools.pairwise(edges)])
    raise ConfigError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")


def headline(
    metrics: dict[str, Any], task_metric: str, kind: str | None = None
) -> tuple[str, float]:
    """The performance of a run: its :func:`dataplan.evaluation.headline_metric` and value."""
    metric = headline_metric(metrics, task_metric, kind)
    return metric, metrics[metric]


@dataclass(kw_only=True)
class ScalingRunsConfig(ModelOptions, DataOptions, PromptOptions, ExecutorOptions, RunOptions):
    """Settings of ``dataplan scaling runs``.

    Attributes:
        out: Runs file to write (.csv or .parquet).
        n: Numbers of training examples (also --sizes: under torchrun, whose own parser
            takes --n for an abbreviation of its options).
        strategies: Subsampling: random, shortest, longest, stratified.
        compute_tokens: Training tokens per run (steps = C / (min(batch, N) · L̄)); default: the
            curve's steps rule.
        seeds: Seeds.
        train: Fine-tuning.
        max_test: Test examples.
        max_new_tokens: Longest generated answer at evaluation.
        cache: Result cache (shared with `curve`; resumes from it).
    """

    out: str
    n: tuple[int, ...] = field(
        default=(32, 64, 128, 256, 512),
        metadata=cli(flag="--n", aliases=("--sizes",), parse=ints("--n")),
    )
    strategies: tuple[str, ...] = field(
        default=STRATEGIES, metadata=cli(parse=names("--strategies"))
    )
    compute_tokens: float | None = None
    seeds: tuple[int, ...] = field(default=(0,), metadata=cli(parse=ints("--seeds")))
    train: TrainSettings = field(default_factory=TrainSettings, metadata=cli(nested=True))
    max_test: int | None = 200
    max_new_tokens: int = 16
    cache: str | None = None

    def curve(self) -> CurveConfig:
        """The curve settings every run shares."""
        return CurveConfig(
            **group_values(
                self, ModelOptions, DataOptions, PromptOptions, ExecutorOptions, RunOptions
            ),
            budgets=(0, *self.n),
            seeds=self.seeds,
            train=self.train,
            max_test=self.max_test,
            max_new_tokens=self.max_new_tokens,
            cache=self.cache,
        )

    def run(self, loaded: LoadedModel | None = None) -> list[dict[str, Any]]:
        """Run (or resume) every (N, strategy, seed) and write the runs file."""
        return scaling_runs(
            self.curve(),
            sizes=self.n,
            strategies=self.strategies,
            compute_tokens=self.compute_tokens,
            out=self.out,
            loaded=loaded,
        )


def _scaling_run(
    cfg: CurveConfig,
    pool: list[Example],
    test: list[Example],
    loaded: LoadedModel,
    job: tuple[np.ndarray, int, int],
) -> dict[str, Any]:
    """One scaling run: train on ``pool[idx]`` for ``steps`` steps, evaluate on ``test``."""
    idx, seed, steps = job
    return train_and_evaluate(
        loaded,
        cfg.prompts.formatter(loaded.tokenizer),
        [pool[i] for i in idx],
        test,
        train_settings=cfg.train,
        evaluation=cfg.evaluation,
        seed=seed,
        steps=steps,
        spec=cfg.spec,
    )


def scaling_runs(
    cfg: CurveConfig,
    *,
    sizes: tuple[int, ...],
    strategies: tuple[str, ...],
    compute_tokens: float | None,
    out: str | Path,
    loaded: LoadedModel | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) every (N, strategy, seed) and write the runs file (CSV or Parquet)."""
    if loaded is None:
        cfg.check_model()
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad:
        raise ConfigError(f"unknown strategy {bad[0]!r}; choose from {', '.join(STRATEGIES)}")
    if compute_tokens is not None and not compute_tokens > 0:
        raise ConfigError("--compute-tokens must be positive")
    if compute_tokens is not None:  # 24000 and 24000.0 are one budget (and one cache key)
        compute_tokens = float(compute_tokens)
    out = Path(out)
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"{out}: write runs to a .csv or .parquet file")
    pool, test, label = load_splits(replace(cfg, budgets=(0, *sizes)))
    task_metric, kind = cfg.source.task_kind()
    loaded = loaded or cfg.spec.load(device=local_device(cfg.device))
    formatter = cfg.prompts.formatter(loaded.tokenizer)
    lengths = token_lengths(formatter, pool)
    _, world_size = world()  # under torchrun: DDP runs, an effective batch of batch × world
    model_params = int(sum(p.numel() for p in loaded.model.parameters()))
    store = point_store(cfg)
    base = {**point_settings(cfg, pool, test), "compute_tokens": compute_tokens}

    rows = []
    jobs = [(n, s, seed) for n in sizes for s in strategies for seed in cfg.seeds]
    plans = []
    for n, strategy, seed in jobs:
        idx = subsample(lengths, n, strategy, seed)
        mean_tokens = float(lengths[idx].mean())
        batch = min(cfg.train.batch_size, n) * world_size  # per process at most n
        steps = cfg.train.steps_for(n, world_size)
        if compute_tokens is not None:
            steps = max(1, math.ceil(compute_tokens / (batch * mean_tokens)))
        key = {**base, "n": n, "strategy": strategy, "seed": seed}
        if world_size > 1:
            key["world_size"] = world_size
        name = f"{label}-scaling-n{n}-{strategy}-s{seed}"
        plans.append((name, key, idx, seed, steps, batch, mean_tokens))
    # Under torchrun each rank takes part in every DDP run.
    results = sweep(
        [Point(name, key, (idx, seed, steps)) for name, key, idx, seed, steps, *_ in plans],
        functools.partial(_scaling_run, cfg, pool, test),
        store,
        cfg,
        loaded=loaded,
        desc=f"scaling runs {label}",
        progress=cfg.progress,
    )
    for (n, strategy, seed), (name, _, _, _, steps, batch, mean_tokens) in zip(
        jobs, plans, strict=True
    ):
        result = results[name]
        metric, performance = headline(result, task_metric, kind)
        tokens_seen = float(steps * batch * mean_tokens)
        rows.append(
            {
                "task": label,
                "strategy": strategy,
                "seed": seed,
                "n_examples": n,
                "mean_tokens": mean_tokens,
                "tokens_seen": tokens_seen,
                "model_params": model_params,
                "pool_size": len(pool),
                "epochs": tokens_seen / (n * mean_tokens),
                "performance": performance,
                "metric": metric,
                "exact_match": result["exact_match"],
                "token_f1": result["token_f1"],
                "loglik_accuracy": result["loglik_accuracy"],
            }
        )
    short = [r for r in rows if r["epochs"] < 1]
    if short:
        log.warning(
            "%d of %d runs train on less than one epoch (e.g. N = %d, L̄ = %.0f: %.2f epochs): "
            "part of their subset is never seen, so their volume overstates the data used",
            len(short),
            len(rows),
            short[0]["n_examples"],
            short[0]["mean_tokens"],
            short[0]["epochs"],
        )
    if not is_main():
        return rows  # one writer under torchrun
    import pandas as pd

    from dataplan.io import atomic_path

    frame = pd.DataFrame(rows)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    return rows
