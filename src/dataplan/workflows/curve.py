"""``dataplan curve``: measure a task's data-efficiency curve by fine-tuning at several budgets.

For every (budget n, seed s) the model is fine-tuned on the first n examples of a seeded
permutation of the training pool (so the subsets are nested across budgets [our choice]) and
evaluated on the held-out test set:

- ``exact_match`` of the cleaned greedy answer (the paper's metric),
- ``token_f1`` of the same answer (free text),
- ``loglik_accuracy``: the option with the highest log-likelihood, for tasks with options,
- ``prediction_majority_share``: share of the most common prediction (1.0 = collapsed).

Every (model, data, budget, seed, settings) result is one JSON file in the cache, written
atomically, so an interrupted curve resumes where it stopped. The curve is written in the
paper's result format (``{"<n>": {"<metric>": mean over seeds}}``) with its AUC
(``dataplan.maths.auc`` with the curve's own grid, n_max = the largest budget), the
always-majority-label baseline and a PNG.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from dataplan.compute.distributed import is_main, world
from dataplan.data.formatting import PromptFormatter
from dataplan.data.loading import Example
from dataplan.errors import ConfigError
from dataplan.evaluation import METRICS, EvalSettings
from dataplan.evaluation.metrics import majority_baseline
from dataplan.io import write_json
from dataplan.maths.auc import data_efficiency_auc
from dataplan.models.builtin import cache_dir
from dataplan.options import (
    DataOptions,
    ExecutorOptions,
    ModelOptions,
    PromptOptions,
    RunOptions,
    cli,
    ints,
)
from dataplan.plots import plot_curve
from dataplan.store import ResultStore
from dataplan.training import TrainSettings
from dataplan.workflows.executor import Point, sweep
from dataplan.workflows.experiment import point_identity, train_and_evaluate
from dataplan.workflows.run_folder import record_command

if TYPE_CHECKING:
    from dataplan.models.loading import LoadedModel

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class CurveConfig(ModelOptions, DataOptions, PromptOptions, ExecutorOptions, RunOptions):
    """Settings of ``dataplan curve``; invalid values fail before any model loads.

    Attributes:
        test_data: Held-out test file (default: min(300, half) split off --data).
        budgets: Training-set sizes; 0 is zero-shot.
        seeds: Seeds: subset order and training randomness.
        train: Fine-tuning settings.
        max_test: Evaluate on at most this many test examples.
        max_new_tokens: Longest generated answer at evaluation.
        eval_batch_size: Prompts generated together at evaluation.
        out_dir: Where the curve files go (default runs/curve-<task>).
        cache: Result cache (default ~/.cache/dataplan/curves); resumes from it.
    """

    test_data: str | None = None
    budgets: tuple[int, ...] = field(
        default=(0, 16, 32, 64, 128, 256, 512, 1024), metadata=cli(parse=ints("--budgets"))
    )
    seeds: tuple[int, ...] = field(default=(0,), metadata=cli(parse=ints("--seeds")))
    train: TrainSettings = field(default_factory=TrainSettings, metadata=cli(nested=True))
    max_test: int | None = None
    max_new_tokens: int = 16
    eval_batch_size: int = 64
    out_dir: str | None = None
    cache: str | None = None

    def __post_init__(self) -> None:
        self.source  # noqa: B018 - validates --task / --data now
        if self.test_data is not None and self.data is None:
            raise ConfigError("--test-data goes with --data")
        if not self.budgets or any(b < 0 for b in self.budgets):
            raise ConfigError("budgets must be non-negative integers")
        if not any(b > 0 for b in self.budgets):
            raise ConfigError("give at least one positive budget")
        if not self.seeds:
            raise ConfigError("give at least one seed")
        if self.max_test is not None and self.max_test < 1:
            raise ConfigError("--max-test must be positive")
        self.evaluation  # noqa: B018 - validates the evaluation settings now
        self.check_executor()
        self.budgets = tuple(sorted(set(self.budgets)))

    @property
    def evaluation(self) -> EvalSettings:
        """Options are scored unless the task is a suite task whose headline metric never reads
        them (arithmetic); a point's key does not depend on it."""
        from dataplan.evaluation.metrics import OPTION_KINDS

        kind = None
        if self.task is not None:
            with contextlib.suppress(ConfigError):  # an unknown task fails where it is loaded
                _, kind = self.source.task_kind()
        return EvalSettings(
            max_new_tokens=self.max_new_tokens,
            batch_size=self.eval_batch_size,
            options=kind is None or kind in OPTION_KINDS,
        )


def load_splits(cfg: CurveConfig) -> tuple[list[Example], list[Example], str]:
    """(training pool, test set, label) of a built-in task or a data file."""
    source = cfg.source
    pool, test = source.splits(cfg.test_data, cfg.max_test)
    too_big = [b for b in cfg.budgets if b > len(pool)]
    if too_big:
        raise ConfigError(
            f"budget {too_big[0]} exceeds the training pool of {len(pool)} examples of "
            f"{source.label}"
        )
    return pool, test, source.label


def training_subset(pool: list[Example], n: int, seed: int) -> list[Example]:
    """The first n of a seeded permutation: nested across budgets for one seed."""
    order = np.random.default_rng([seed, 3]).permutation(len(pool))
    return [pool[i] for i in order[:n]]


def run_point(
    loaded: LoadedModel,
    formatter: PromptFormatter,
    pool: list[Example],
    test: list[Example],
    cfg: CurveConfig,
    n: int,
    seed: int,
) -> dict[str, Any]:
    """Fine-tune on the first n examples of the seeded pool order (n = 0: none) and evaluate."""
    subset = training_subset(pool, n, seed) if n > 0 else []
    result = train_and_evaluate(
        loaded,
        formatter,
        subset,
        test,
        train_settings=cfg.train,
        evaluation=cfg.evaluation,
        seed=seed,
        spec=cfg.spec,
    )
    return {"budget": n, **result}


def point_store(cfg: CurveConfig) -> ResultStore:
    """The store of cached experiments (``--cache``, default ``~/.cache/dataplan/curves``)."""
    return ResultStore(Path(cfg.cache) if cfg.cache else cache_dir() / "curves")


def point_settings(cfg: CurveConfig, pool: list[Example], test: list[Example]) -> dict[str, Any]:
    """What determines a cached result besides its budget/subset and seed (its cache key)."""
    return point_identity(cfg.spec, cfg.prompts, pool, test, cfg.train, cfg.evaluation)


def measure_curve(cfg: CurveConfig, loaded: LoadedModel | None = None) -> dict[str, Any]:
    """Run (or resume) every (budget, seed) point and write the curve files; returns the summary."""
    if loaded is None:
        cfg.check_model()
    pool, test, label = load_splits(cfg)
    store = point_store(cfg)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("runs") / f"curve-{label}"
    settings = point_settings(cfg, pool, test)
    _, world_size = world()
    plan = []
    for n in cfg.budgets:
        for seed in cfg.seeds if n > 0 else cfg.seeds[:1]:
            key = {**settings, "budget": n, "seed": seed}
            if n == 0:
                key.pop("train")
            elif world_size > 1:  # DDP: an effective batch of batch_size × world_size
                key["world_size"] = world_size
            plan.append(Point(f"{label}-n{n}-s{seed}", key, (n, seed)))
    # Under torchrun every rank runs every point (DDP training, evaluation batches dealt out).
    found = sweep(
        plan,
        functools.partial(_curve_point, cfg, pool, test),
        store,
        cfg,
        loaded=loaded,
        desc=f"curve {label}",
        progress=cfg.progress,
    )
    points = {p.job: found[p.name] for p in plan}
    return summarise(cfg, label, pool, test, points, out_dir)


def _curve_point(
    cfg: CurveConfig,
    pool: list[Example],
    test: list[Example],
    loaded: LoadedModel,
    job: tuple[int, int],
) -> dict[str, Any]:
    """One point of a curve: ``budget`` examples, ``seed``."""
    n, seed = job
    formatter = cfg.prompts.formatter(loaded.tokenizer)
    result = run_point(loaded, formatter, pool, test, cfg, n, seed)
    _, world_size = world()
    if n > 0 and world_size > 1:
        result["world_size"] = world_size
        result["effective_batch"] = cfg.train.batch_size * world_size
    log.info(
        "curve point n=%d seed=%d: EM %.3f, F1 %.3f, loglik %s",
        n,
        seed,
        result["exact_match"],
        result["token_f1"],
        result["loglik_accuracy"],
    )
    return result


def summarise(
    cfg: CurveConfig,
    label: str,
    pool: list[Example],
    test: list[Example],
    points: dict[tuple[int, int], dict[str, Any]],
    out_dir: Path,
) -> dict[str, Any]:
    """Mean over seeds per budget, AUC per metric, majority baseline; writes the curve files."""
    curve: dict[int, dict[str, float]] = {}
    spread: dict[int, dict[str, float]] = {}
    for n in cfg.budgets:
        rows = [p for (b, _), p in points.items() if b == n]
        curve[n], spread[n] = {}, {}
        for metric in (*METRICS, "prediction_majority_share"):
            values = [r[metric] for r in rows if r.get(metric) is not None]
            if values:
                curve[n][metric] = float(np.mean(values))
                spread[n][metric] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    grid = tuple(b for b in cfg.budgets if b > 0)
    aucs = {}
    for metric in METRICS:
        series = {n: v[metric] for n, v in curve.items() if metric in v}
        if 0 in series and len(series) == len(cfg.budgets):
            aucs[metric] = data_efficiency_auc(series, grid=grid)
    maj_label, maj_acc = majority_baseline(  # load_splits requires answers: all strings
        [cast(str, e.answer) for e in pool], [cast(str, e.answer) for e in test]
    )
    summary = {
        "task": label,
        "model": cfg.model,
        "budgets": list(cfg.budgets),
        "seeds": list(cfg.seeds),
        "n_max": max(grid),
        "n_pool": len(pool),
        "n_test": len(test),
        "auc": aucs,
        "majority_label": maj_label,
        "majority_accuracy": maj_acc,
        "curve": {str(n): v for n, v in curve.items()},
        "spread_over_seeds": {str(n): v for n, v in spread.items()},
        "train": cfg.train.to_dict(),
    }
    if not is_main():
        return summary  # one writer under torchrun
    write_json(out_dir / "results.json", {str(n): v for n, v in curve.items()})
    write_json(out_dir / "summary.json", summary)
    record_command(out_dir)
    write_json(out_dir / "points.json", [points[k] for k in sorted(points)])
    plot_curve(out_dir / "curve.png", label, cfg.model, curve, maj_acc)
    return summary
