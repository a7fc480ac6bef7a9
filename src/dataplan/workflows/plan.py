"""``dataplan plan``: the five answers for one model and task, in one folder and one page.

Runs, each in its own run folder under ``--out`` (so a rerun reuses every finished step and a
crashed plan resumes), with the model loaded once:

1. ``estimate`` with ``--probe auto`` (how much data, how sure) → ``estimate/``;
2. the recommended selection → ``select/``: what the selection evidence on the built-in model
   supports (docs/select.md) — a scored top fraction without balancing lost to random on every
   task; balanced, G-SNR tied random on clean tasks, and its shrinkage form won only where
   labels were wrong. So: a balanced random draw (free), or with ``--label-noise`` G-SNR's
   shrinkage form, balanced (an ensemble of fine-tunes and a gradient pass per member and
   checkpoint: minutes to hours) — balanced by label (classification pools) or answer length;
3. ICA weights of the same pool when ``--holdout`` is given → ``weigh/``;
4. a scaling fit and, with ``--compute-tokens``, a budget plan when ``--scaling-runs FILE``
   is given (measuring scaling runs is dozens of fine-tunes: ``dataplan scaling runs``) →
   ``scaling-fit.json``, ``scaling-plan.json``;

then writes ``report.html`` and ``plan.json`` (:mod:`dataplan.workflows.report`). Every step can
be skipped (``--skip select,weigh``); every setting is checked before the model loads.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataplan.errors import ConfigError
from dataplan.options import (
    DataOptions,
    MemoryOptions,
    ModelOptions,
    PromptOptions,
    RunOptions,
    cli,
    group_values,
    names,
)
from dataplan.workflows.forecasting import ForecastOptions

log = logging.getLogger(__name__)

STEPS = ("estimate", "select", "weigh", "scaling")


@dataclass(kw_only=True)
class PlanConfig(
    ModelOptions, DataOptions, PromptOptions, ForecastOptions, MemoryOptions, RunOptions
):
    """Settings of ``dataplan plan``.

    Attributes:
        out: The plan's folder: a run folder per step, report.html and plan.json.
        holdout: A small trusted labelled holdout: ICA weights of the data (weigh).
        scaling_runs: A runs file of `dataplan scaling runs` (CSV/Parquet) to fit and plan from.
        compute_tokens: A training budget in tokens for the scaling plan (with
            --scaling-runs; without, the plan says how to measure them).
        skip: Steps to leave out: estimate, select, weigh, scaling (comma-separated).
        max_pool: Use at most this many examples of the data (estimate and select).
        n_labeled: Low-confidence examples the estimate labels and uses.
        low_fraction: The estimate's least-confident share of the pool to label from.
        probe: The estimate's probing: auto (when the probe calibration says it pays), off, or
            probe steps such as 16,32.
        probe_seeds: Probe runs of the estimate.
        probe_price: The price of a probe step in forecast variance: auto probes to c*
            (fewer steps for a higher price); default: where the optimisation variance falls to
            the intrinsic limit.
        probe_calibration: The estimate's probe calibration, by name or file
            (probe-calibration.json of `dataplan calibrate --probe-steps`); default: the one
            shipped for the CoS-Low calibration.
        tokenization: How the estimate's CoS-Low tokenises prompt and answer: split or joint;
            default: the calibration's convention.
        label_noise: Some labels may be wrong: select with G-SNR's shrinkage form (it kept
            3% corrupted examples where random kept 33%, docs/select.md) instead of a random
            draw.
        select_method: Selection method; auto: random, or gsnr with --label-noise (what the
            evidence supports, docs/select.md).
        snr_form: G-SNR form of the selection (gsnr).
        fraction: Share of the pool the selection keeps.
        balance_by: Balance the subset by label or answer-length; auto: label when the answers
            are labels, else answer-length; off: no balancing.
        k: Demonstrations per example of the ICA weights.
        seed: Seed of every random choice of the plan.
    """

    out: str
    holdout: str | None = None
    scaling_runs: str | None = None
    compute_tokens: float | None = None
    skip: tuple[str, ...] = field(default=(), metadata=cli(parse=names("--skip")))
    max_pool: int | None = None
    n_labeled: int = 32
    low_fraction: float = 0.1
    probe: str = "auto"
    probe_seeds: int = 3
    probe_price: float | None = None
    probe_calibration: str | None = None
    tokenization: str | None = None
    label_noise: bool = False
    select_method: str = "auto"
    snr_form: str = "shrinkage"
    fraction: float = 0.1
    balance_by: str = "auto"
    k: int = field(default=3, metadata=cli(flag="--k"))
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [s for s in self.skip if s not in STEPS]
        if unknown:
            raise ConfigError(
                f"--skip: unknown step {unknown[0]!r}; choose from {', '.join(STEPS)}"
            )
        if self.balance_by not in ("auto", "off", "label", "answer-length"):
            raise ConfigError(
                f"--balance-by must be auto, off, label or answer-length, got {self.balance_by!r}"
            )
        if self.compute_tokens is not None and not self.compute_tokens > 0:
            raise ConfigError("--compute-tokens must be positive")
        self.memory_budget  # noqa: B018 - validates --max-memory
        # Every step's settings, checked now: a bad option fails before the model loads.
        self.estimate_config()
        self.select_config(None)
        self.weigh_config()

    @property
    def selection_method(self) -> str:
        """The selection method ``auto`` stands for."""
        if self.select_method != "auto":
            return self.select_method
        return "gsnr" if self.label_noise else "random"

    def runs(self, step: str) -> bool:
        """Whether ``step`` is part of this plan."""
        if step in self.skip:
            return False
        if step == "weigh":
            return self.holdout is not None
        if step == "scaling":
            return self.scaling_runs is not None
        return True

    def _shared(self) -> dict[str, Any]:
        return group_values(
            self, ModelOptions, DataOptions, PromptOptions, MemoryOptions, RunOptions
        )

    def estimate_config(self) -> Any:
        from dataplan.workflows.estimate_config import EstimateConfig

        return EstimateConfig(
            **self._shared(),
            **group_values(self, ForecastOptions),
            max_pool=self.max_pool,
            n_labeled=self.n_labeled,
            low_fraction=self.low_fraction,
            probe=self.probe,
            probe_seeds=self.probe_seeds,
            probe_price=self.probe_price,
            probe_calibration=self.probe_calibration,
            tokenization=self.tokenization,
            seed=self.seed,
            run_dir=str(Path(self.out) / "estimate"),
        )

    def select_config(self, balance_by: str | None, pool: Path | None = None) -> Any:
        """The selection's settings; ``pool``: the file of the examples the estimate used."""
        from dataplan.workflows.select_config import SelectConfig

        shared = self._shared()
        if pool is not None:
            shared.update(data=str(pool), task=None, split=None)
        return SelectConfig(
            **shared,
            method=self.selection_method,
            snr_form=self.snr_form,
            fraction=self.fraction,
            balance_by=balance_by,
            seed=self.seed,
            out=str(Path(self.out) / "subset.jsonl"),
            run_dir=str(Path(self.out) / "select"),
        )

    def weigh_config(self, pool: Path | None = None) -> Any:
        """The ICA weights' settings; ``pool``: the file of the examples the plan uses."""
        if self.holdout is None:
            return None
        from dataplan.training.weighting.ica import ICASettings
        from dataplan.workflows.weigh import WeighConfig

        shared = self._shared()
        shared.pop("max_memory")  # weigh's budget is part of its ICA settings
        if pool is not None:
            shared.update(data=str(pool), task=None, split=None)
        return WeighConfig(
            **shared,
            holdout=self.holdout,
            out=str(Path(self.out) / "weights.parquet"),
            ica=ICASettings(k=self.k, seed=self.seed, max_memory=self.max_memory),
            run_dir=str(Path(self.out) / "weigh"),
        )


def _balance(cfg: PlanConfig, pool: list[Any]) -> str | None:
    """The selection's balancing: ``auto`` reads the pool's answers."""
    if cfg.balance_by == "off":
        return None
    if cfg.balance_by != "auto":
        return cfg.balance_by
    from dataplan.workflows.select import answers_are_labels

    return "label" if answers_are_labels([e.answer for e in pool]) else "answer-length"


def _write_pool(cfg: PlanConfig, pool: list[Any], out: Path) -> Path:
    """The pool the estimate reads (``--max-pool`` applied), as a file the selection and the
    weights read: every step sees the same examples."""
    from dataplan.workflows.select import write_subset

    path = out / "pool.jsonl"
    write_subset(path, pool, cfg.fields)
    return path


ADVISED_SIZES = (32, 64, 128, 256)  # the scaling study's volumes


def _scaling_skipped(cfg: PlanConfig) -> str:
    """Why the scaling step does not run without --scaling-runs [our choice]: measuring a law
    is never affordable inside the budget it plans — its runs (four volumes × the four
    strategies of `scaling runs`, each at the budget) cost 16 times that budget — so the plan
    says what it would take and how, rather than spending it unasked."""
    if cfg.compute_tokens is None:
        return "no --scaling-runs given (measure them with `dataplan scaling runs`)"
    import shlex

    from dataplan.workflows.scaling_runs import STRATEGIES

    source = (
        f"--task {shlex.quote(cfg.task)}"
        if cfg.task is not None
        else f"--data {shlex.quote(str(cfg.data))}"
    )
    runs = len(ADVISED_SIZES) * len(STRATEGIES)
    c = cfg.compute_tokens
    budget = str(int(c)) if float(c).is_integer() else repr(c)
    return (
        f"no --scaling-runs given: a law to plan {budget} tokens needs {runs} fine-tunes of "
        f"{budget} tokens each ({runs}× the budget); measure them with `dataplan scaling runs "
        f"--model {shlex.quote(cfg.model)} {source} --n {','.join(map(str, ADVISED_SIZES))} "
        f"--compute-tokens {budget} --out runs.csv` and give --scaling-runs runs.csv"
    )


def run_plan(cfg: PlanConfig) -> dict[str, Any]:
    """Run the plan's steps (resuming finished ones) and write the report; returns plan.json."""
    from dataplan.io import write_json
    from dataplan.reporting.readers import PLAN_STEPS
    from dataplan.workflows.estimate import load_pool
    from dataplan.workflows.report import build_report

    cfg.check_model()
    pool: list[Any] = []
    if cfg.runs("select") or cfg.runs("weigh"):  # the estimate's examples (--max-pool applied)
        pool, _, _ = load_pool(cfg.estimate_config())
    if cfg.runs("weigh"):  # a bad holdout fails now, not after the estimate and the selection
        from dataplan.data.loading import load_examples
        from dataplan.training.weighting.ica import check_holdout

        assert cfg.holdout is not None
        holdout = load_examples(
            cfg.holdout, fields=cfg.fields, require_answer=True, default_split=False
        )
        check_holdout(holdout, cfg.k, cfg.holdout, pool)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = cfg.spec.load()
    folders: list[Path] = []
    steps: list[dict[str, Any]] = []

    def step(name: str, reason: str | None = None) -> bool:
        if cfg.runs(name):
            return True
        skipped = "skipped (--skip)" if name in cfg.skip or reason is None else reason
        steps.append({"step": name, "skipped": skipped})
        return False

    if step("estimate"):
        from dataplan.workflows.estimate import estimate

        start = time.perf_counter()
        estimate(cfg.estimate_config(), loaded)
        folders.append(out / "estimate")
        steps.append({"step": "estimate", "seconds": round(time.perf_counter() - start, 1)})
    pool_file: Path | None = None
    if cfg.runs("select") or cfg.runs("weigh"):  # the same examples as the estimate's
        pool_file = _write_pool(cfg, pool, out)
    if step("select"):
        from dataplan.workflows.select import select

        start = time.perf_counter()
        balance = _balance(cfg, pool)
        select(cfg.select_config(balance, pool_file), loaded)
        folders.append(out / "select")
        steps.append(
            {
                "step": "select",
                "balance_by": balance,
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    if step("weigh", "no --holdout given"):
        from dataplan.workflows.weigh import weigh

        start = time.perf_counter()
        weigh(cfg.weigh_config(pool_file), loaded)
        folders.append(out / "weigh")
        steps.append({"step": "weigh", "seconds": round(time.perf_counter() - start, 1)})
    if step("scaling", _scaling_skipped(cfg)):
        from dataplan.plots import plot_fit, plot_plan
        from dataplan.workflows.scaling import fit_runs
        from dataplan.workflows.scaling import plan as scaling_plan

        assert cfg.scaling_runs is not None
        law = fit_runs(cfg.scaling_runs)
        law["runs_file"] = str(cfg.scaling_runs)
        write_json(out / "scaling-fit.json", law)
        plot_fit(law, cfg.scaling_runs, out / "scaling-fit.png")
        folders.append(out / "scaling-fit.json")
        if cfg.compute_tokens is not None:
            write_json(out / "scaling-plan.json", scaling_plan(law, cfg.compute_tokens))
            plot_plan(law, out / "scaling-plan.png")
            folders.append(out / "scaling-plan.json")
        steps.append({"step": "scaling"})
    if not folders:
        raise ConfigError("every step is skipped: nothing to report")
    # `dataplan report DIR` finds the same runs by these names
    assert all(f.name in {n for names in PLAN_STEPS.values() for n in names} for f in folders)
    result = build_report(folders, out / "report.html", title=f"dataplan plan: {cfg.source.label}")
    result["steps"] = steps
    write_json(out / "plan.json", result)
    return result
