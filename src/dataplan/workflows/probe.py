"""``dataplan probe``: short LoRA fine-tunes (probes) on labelled examples the user already has,
measured at several depths, one run per seed (docs/methods.md §8).

1. The labelled examples: a suite task's (``--task``: a seeded sample of ``--n-examples`` from its
   pool), a file (``--data``), or the ones an ``estimate`` run labelled (``--estimate-dir``:
   its ``chosen.jsonl``). ``--validation`` of them (a seeded draw, the same for every seed) are
   held out; the probes train on the rest.
2. One probe per seed (:func:`dataplan.training.probes.probe_trajectory`): train and validation
   loss and, when the examples have options, validation accuracy, before training and at every
   depth of ``--steps``. Each seed is cached in the run folder as it finishes, so an interrupted
   run resumes seed by seed and ``--seeds`` can grow.
3. ``probes.csv`` (one row per seed and depth: the trajectory features), ``result.json`` (each
   feature's mean and across-seed standard deviation per depth) and ``probes.png``.

4. With a probe calibration (``--calibration FILE``, written by ``calibrate --probe-steps``):
   each seed's forecast of AUC' at each depth, their mean and spread, an interval per depth from
   the calibration's leave-one-task-out error, and the decomposition of
   :func:`dataplan.maths.probe.analyse` (L_int from the calibration, K and α from the seeds'
   spread, c* for ``--price``, the regime) with ``decay.png``, and ``phase-diagram.png``: the
   task among the calibration tasks (:func:`phase_point`).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dataplan.errors import ConfigError, DataplanError, InputError
from dataplan.options import (
    DataOptions,
    ExecutorOptions,
    ModelOptions,
    PromptOptions,
    RunOptions,
    cli,
    ints,
)
from dataplan.training.settings import TrainSettings

DEFAULT_STEPS = (8, 16, 32, 64)


@dataclass(kw_only=True)
class ProbeConfig(ModelOptions, DataOptions, PromptOptions, ExecutorOptions, RunOptions):
    """Settings of ``dataplan probe``. Invalid values fail here, before any model loads.

    Attributes:
        estimate_dir: Probe on the examples an `estimate` run labelled (its run folder) instead
            of --task / --data.
        n_examples: With --task: how many pool examples to probe on (a seeded sample).
        steps: Probe depths in optimiser steps (comma-separated, increasing); every probe runs
            to the largest.
        seeds: Probe runs (seeds 0, 1, …).
        validation: Labelled examples held out of the probes' training to measure them.
        seed: Seed of the --task sample and of the validation draw.
        run_dir: Run folder (default runs/probe-<data>); rerun to resume.
        calibration: A probe calibration, by name (one shipped with dataplan, named after
            its model's CoS-Low calibration) or file (probe-calibration.json of `calibrate
            --probe-steps`): turns the probes into forecasts of AUC' per depth.
        price: The price of a probe step in forecast variance (with --calibration): gives c*.
        interval: Coverage of the forecast intervals.
        target: A normalised target τ in (0, 1) (with --calibration): the examples n* needed to
            reach it at each depth, with its interval.
        n_max: The budget the curve is normalised to (with --target); default: that of the
            CoS-Low calibration shipped under the probe calibration's name.
        train: Fine-tuning of each probe (its steps are the largest depth).
    """

    estimate_dir: str | None = None
    n_examples: int = 32
    steps: tuple[int, ...] = field(default=DEFAULT_STEPS, metadata=cli(parse=ints("--steps")))
    seeds: int = 3
    validation: int = 8
    seed: int = 0
    run_dir: str | None = None
    calibration: str | None = None
    price: float | None = None
    interval: float = 0.8
    target: float | None = None
    n_max: int | None = None
    train: TrainSettings = field(default_factory=TrainSettings, metadata=cli(nested=True))

    def __post_init__(self) -> None:
        given = [n for n, v in (("--task", self.task), ("--data", self.data)) if v is not None]
        if self.estimate_dir is not None:
            given.append("--estimate-dir")
        if len(given) != 1:
            raise ConfigError(
                "give exactly one of --task, --data or --estimate-dir (the labelled examples "
                f"to probe on); got {', '.join(given) or 'none'}"
            )
        steps = list(self.steps)
        if not steps or any(s < 1 for s in steps) or steps != sorted(set(steps)):
            raise ConfigError(f"--steps must be increasing positive integers, got {steps}")
        if self.seeds < 2:
            raise ConfigError(
                f"--seeds must be at least 2 (the across-seed spread is the point), got {self.seeds}"
            )
        if self.validation < 1:
            raise ConfigError(f"--validation must be at least 1, got {self.validation}")
        if self.n_examples < 2:
            raise ConfigError(f"--n-examples must be at least 2, got {self.n_examples}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be a non-negative integer, got {self.seed}")
        if self.train.method != "lora":
            raise ConfigError("a probe trains a LoRA adapter: --method lora")
        if self.price is not None and not (np.isfinite(self.price) and self.price > 0):
            raise ConfigError(f"--price must be a positive number, got {self.price}")
        if self.price is not None and self.calibration is None:
            raise ConfigError("--price prices the forecast's variance: it needs --calibration")
        self.check_executor()
        if not 0 < self.interval < 1:
            raise ConfigError(f"--interval must be in (0, 1), got {self.interval}")
        if self.target is not None:
            if not 0 < self.target < 1:
                raise ConfigError(f"--target must be in (0, 1), got {self.target}")
            if self.calibration is None:
                raise ConfigError("--target forecasts n*: it needs --calibration")
            if self.n_max is None:
                from dataplan.calibrations import get_calibration, has_calibration

                if not has_calibration(self.calibration):
                    raise ConfigError(
                        "--target needs --n-max N (the budget the curve is normalised to): no "
                        f"CoS-Low calibration is named {self.calibration!r}"
                    )
                self.n_max = get_calibration(self.calibration).n_max
        if self.n_max is not None and self.target is None:
            raise ConfigError("--n-max normalises the n* of --target: give --target τ too")
        if self.n_max is not None and self.n_max < 2:
            raise ConfigError(f"--n-max must be at least 2, got {self.n_max}")

    def probe_calibration(self) -> Any:
        """The --calibration file as a ProbeCalibration (None without one), checked against
        --steps."""
        if self.calibration is None:
            return None
        cal = load_probe_calibration(self.calibration)
        missing = [c for c in self.steps if c not in {int(d.depth) for d in cal.depths}]
        if missing:
            raise ConfigError(
                f"--steps {', '.join(map(str, missing))} not in the calibration (calibrated: "
                + ", ".join(f"{d.depth:g}" for d in cal.depths)
                + ")"
            )
        from dataplan.store import canonical

        made = {"validation": self.validation, "train": probe_training(canonical(self.train))}
        differ = [k for k in ("validation", "train") if k in cal.probe and cal.probe[k] != made[k]]
        if differ:
            logging.getLogger(__name__).warning(
                "these probes are made with other %s than the calibration's (%s): its "
                "forecast assumes probes made alike",
                " and ".join(differ),
                ", ".join(f"{k} {cal.probe[k]}" for k in differ),
            )
        return cal

    @property
    def label(self) -> str:
        if self.estimate_dir is not None:
            return Path(self.estimate_dir).name
        return self.source.label

    def load(self) -> list[Any]:
        """The labelled examples to probe on."""
        from dataplan.data.loading import load_examples

        if self.estimate_dir is not None:
            from dataplan.workflows.estimate import CHOSEN

            path = Path(self.estimate_dir) / CHOSEN
            if not path.is_file():
                raise InputError(
                    f"no {CHOSEN}: not an estimate run folder (or its run stopped before "
                    "choosing examples)",
                    path=self.estimate_dir,
                )
            examples = load_examples(path, require_answer=False)
            if any(e.answer is None for e in examples):
                raise InputError(
                    "the chosen examples have no answers yet: label them (estimate "
                    "--annotate-out / --labeled), or probe on the labelled file with --data",
                    path=path,
                )
            return examples
        if self.task is not None:
            pool = self.source.load(require_answer=True)
            order = np.random.default_rng([self.seed, 29]).permutation(len(pool))
            return [pool[i] for i in order[: self.n_examples]]
        return load_examples(self.data or "", fields=self.fields, require_answer=True)

    def train_validation(self, examples: list[Any]) -> tuple[list[Any], list[Any]]:
        """(training, validation): a seeded draw of ``validation`` examples held out."""
        if len(examples) < self.validation + 2:
            raise InputError(
                f"{len(examples)} labelled examples: too few to hold out --validation "
                f"{self.validation} and train on at least 2",
                path=self.estimate_dir or self.data or self.task,
            )
        order = np.random.default_rng([self.seed, 31]).permutation(len(examples))
        held = set(order[: self.validation].tolist())
        train = [e for i, e in enumerate(examples) if i not in held]
        validation = [e for i, e in enumerate(examples) if i in held]
        return train, validation


def probe_training(train: dict[str, Any]) -> dict[str, Any]:
    """The training settings (canonical, non-default) that make a probe: all but the curve's
    steps rule (epochs, min/max steps) — a probe's steps are its depths."""
    return {k: v for k, v in train.items() if k not in ("epochs", "min_steps", "max_steps")}


def load_probe_calibration(name_or_path: str | Path) -> Any:
    """A probe-alone calibration as a
    :class:`~dataplan.maths.probe_calibration.ProbeCalibration`: one shipped with the package by
    name (``smollm2-135m-instruct``), else a file (``probe-calibration.json`` of ``calibrate
    --probe-steps``).

    Raises:
        InputError: a missing or unreadable file, or one that is not a probe-alone calibration.
    """
    from dataplan.calibrations import shipped_probe_calibration_text, shipped_probe_calibrations
    from dataplan.maths.probe_calibration import ProbeCalibration
    from dataplan.parsing import decode_json, read_utf8

    p = Path(name_or_path)
    text = shipped_probe_calibration_text(str(name_or_path))
    if text is None:
        if not p.is_file():
            shipped = ", ".join(shipped_probe_calibrations()) or "none"
            raise InputError(
                f"file not found (and no probe calibration of that name; shipped: {shipped})",
                path=p,
            )
        text = read_utf8(p)
    try:
        cal = ProbeCalibration.from_dict(decode_json(text))
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(
            f"not a probe calibration written by `calibrate --probe-steps` ({err})", path=p
        ) from None
    if cal.with_static:
        raise InputError(
            "a probe calibration with CoS-Low: use the probe-alone one (probe-calibration.json)",
            path=p,
        )
    made = cal.probe
    validation = made.get("validation", 8)
    if not (isinstance(validation, int) and validation >= 1):
        raise InputError(f"probe.validation must be a positive integer, got {validation!r}", path=p)
    try:  # how its probes were made: settings a TrainSettings takes
        from dataplan.training.settings import TrainSettings

        TrainSettings(**(made.get("train") or {}))
    except (TypeError, ValueError, DataplanError) as err:
        raise InputError(f"probe.train is not a set of training settings ({err})", path=p) from None
    return cal


def run_probe(cfg: ProbeConfig, loaded: Any = None) -> dict[str, Any]:
    """Run ``dataplan probe`` (see the module docstring); returns the summary."""
    from dataplan.compute.distributed import is_main, world
    from dataplan.digests import examples_digest
    from dataplan.io import write_csv
    from dataplan.models.loading import model_identity
    from dataplan.store import ResultStore, canonical, runtime
    from dataplan.training.probes import FEATURES, ProbeTrajectory
    from dataplan.workflows.executor import Point, sweep
    from dataplan.workflows.run_folder import RunFolder

    if loaded is None:
        cfg.check_model()
    calibration = cfg.probe_calibration()  # a bad file fails before any model work
    examples = cfg.load()
    train_set, validation = cfg.train_validation(examples)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else Path("runs") / f"probe-{cfg.label}"
    identity = {
        "model": model_identity(cfg.model),
        **runtime(cfg.device, cfg.dtype),
        "train": examples_digest(train_set),
        "validation": examples_digest(validation),
        "prompts": canonical(cfg.prompts),
        "steps": list(cfg.steps),
        "settings": canonical(cfg.train),
    }
    _, world_size = world()
    if world_size > 1:  # DDP probes under torchrun: a step takes batch_size × world_size
        identity["world_size"] = world_size
    run = RunFolder(run_dir, identity)
    if is_main():  # fail before loading the model; other ranks check once it is made
        run.check()
    run.open_shared()  # under torchrun: rank 0 creates it, the others check it after
    store = ResultStore(run.file("probes"))
    # Under torchrun each rank trains every DDP probe.
    by_name = sweep(
        [Point(f"seed{s}", {"seed": s}, s) for s in range(cfg.seeds)],
        functools.partial(_probe_seed, cfg, train_set, validation),
        store,
        cfg,
        loaded=loaded,
        desc=f"probes of {cfg.label}",
        progress=cfg.progress and cfg.seeds > 1,
    )
    trajectories = [ProbeTrajectory.from_dict(by_name[f"seed{s}"]) for s in range(cfg.seeds)]
    rows: list[dict[str, Any]] = []
    for t in trajectories:
        for depth in cfg.steps:
            rows.append({"seed": t.seed, "c": depth, **t.features(depth)})
    per_depth = []
    for depth in cfg.steps:
        entry: dict[str, Any] = {"c": depth}
        for name in FEATURES:
            values = [float(r[name]) for r in rows if r["c"] == depth and r[name] is not None]
            if values:
                entry[name] = {
                    "mean": float(np.mean(values)),
                    "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                }
        per_depth.append(entry)
    summary = {
        "run_dir": str(run.path),
        "examples": {"train": len(train_set), "validation": len(validation)},
        "seeds": cfg.seeds,
        "steps": list(cfg.steps),
        "before_training": trajectories[0].points[0].as_dict(),
        "by_depth": per_depth,
        "probes_csv": str(run.file("probes.csv")),
        "rows": rows,
    }
    if not is_main():  # one writer under torchrun; the same forecast on every rank
        if calibration is not None:
            summary["forecast"] = forecast_from_probes(cfg, calibration, rows, None)
        return summary
    write_csv(run.file("probes.csv"), rows)
    from dataplan.plots import plot_probe_features

    plot_probe_features(run.file("probes.png"), rows, title=f"probes of {cfg.label}")
    summary["plot"] = str(run.file("probes.png"))
    if calibration is not None:
        forecast = forecast_from_probes(cfg, calibration, rows, run.file("decay.png"))
        point = phase_point(forecast, calibration)
        if point is not None:
            forecast["phase_point"] = point
            draw_phase(run.file(PHASE_PNG), calibration, point, cfg.label)
        summary["forecast"] = forecast
    run.write_json("result.json", summary)
    return summary


def _probe_seed(
    cfg: ProbeConfig,
    train_set: list[Any],
    validation: list[Any],
    loaded: Any,
    seed: int,
) -> dict[str, Any]:
    """One probe run, its trajectory and its seconds."""
    from dataplan.training.probes import probe_trajectory

    start = time.perf_counter()
    t = probe_trajectory(
        loaded.model,
        train_set,
        validation,
        cfg.prompts.formatter(loaded.tokenizer),
        cfg.steps,
        seed=seed,
        settings=cfg.train,
    )
    return {**t.as_dict(), "seconds": time.perf_counter() - start}


def forecast_from_probes(
    cfg: ProbeConfig, calibration: Any, rows: list[dict[str, Any]], plot: Path | None
) -> dict[str, Any]:
    """Each seed's forecast per depth, their spread, the interval per depth and the
    decomposition (module docstring, step 4)."""
    from scipy.stats import norm

    from dataplan.maths.forecast import budget_for_target, budget_interval
    from dataplan.maths.probe import ProbeFitError, analyse
    from dataplan.plots import plot_probe_decay

    feature = calibration.feature
    for r in rows:
        if r.get(feature) is None:
            raise InputError(
                f"the calibration maps {feature}, which these probes could not measure "
                "(val_accuracy needs examples with options)",
                path=cfg.calibration,
            )
        r["prediction"] = calibration.predict(r["c"], float(r[feature]))[0]
    z = float(norm.ppf(0.5 + cfg.interval / 2))
    by_depth = []
    for c in cfg.steps:
        values = np.array([r["prediction"] for r in rows if r["c"] == c])
        sigma = float(np.sqrt(calibration.variance(c, cfg.seeds)))  # for this many seeds
        mean = float(values.mean())
        row: dict[str, Any] = {
            "c": c,
            "auc": mean,
            "seed_sd": float(values.std(ddof=1)) if len(values) > 1 else None,
            "interval": [mean - z * sigma, mean + z * sigma],
            "calibration_loo_mae": calibration.at(c).loo_mae,
        }
        if cfg.target is not None:
            assert cfg.n_max is not None
            row["n_star"] = budget_for_target(mean, cfg.target, cfg.n_max)
            row["n_star_interval"] = list(
                budget_interval(mean - z * sigma, mean + z * sigma, cfg.target, cfg.n_max)
            )
        by_depth.append(row)
    out: dict[str, Any] = {"feature": feature, "by_depth": by_depth, "level": cfg.interval}
    if cfg.target is not None:
        out.update(target=cfg.target, n_max=cfg.n_max)
    try:
        analysis = analyse(
            [r["c"] for r in rows],
            [r["seed"] for r in rows],
            [r["prediction"] for r in rows],
            price=cfg.price,
            intrinsic=calibration.intrinsic,
            level=cfg.interval,
        )
    except ProbeFitError as err:
        out["decomposition_error"] = str(err)
        return out
    out["decomposition"] = analysis.as_dict()
    if plot is not None:
        plot_probe_decay(analysis, plot)
        out["decay_plot"] = str(plot)
    return out


def calibration_regime(calibration: Any) -> str | None:
    """The regime of the calibration's model-wide L_int and decay (V_opt at its shallowest
    depth from the fit); None when its seed variance does not decay (α ≤ 0, K = 0, no fit)."""
    from dataplan.maths.probe import regime

    decay = calibration.decay
    if decay is None or not (decay.alpha > 0 and decay.K > 0):
        return None
    shallow = float(decay.optimisation_variance(calibration.depths[0].depth))
    return regime(calibration.intrinsic, decay.alpha, shallow)


PHASE_PNG = "phase-diagram.png"


def phase_point(report: dict[str, Any], calibration: Any) -> dict[str, Any] | None:
    """The task's point on the phase diagram [our choice]: α from the decay of its own probes'
    seed variance when they ran at two or more depths (L_int is the calibration's: one task has
    no ground truth to measure its own), else the calibration's model-wide (L_int, α) that
    ``auto`` decided from; None when the calibration has no decay either."""
    own = report.get("decomposition")
    if own is not None and own.get("alpha") is not None:
        return {
            "intrinsic": own["L_int"],
            "alpha": own["alpha"],
            "regime": own.get("regime"),
            "source": "its own probes",
        }
    decay = calibration.decay
    if decay is None:
        return None
    return {
        "intrinsic": calibration.intrinsic,
        "alpha": decay.alpha,
        "regime": report.get("regime") or calibration_regime(calibration),
        "source": "the calibration's model-wide α and L_int",
    }


def draw_phase(path: Path, calibration: Any, point: dict[str, Any], label: str) -> None:
    """The calibration tasks and this task (a star) on the phase diagram."""
    from dataplan.maths.probe import RegimeThresholds
    from dataplan.plots import plot_phase_diagram

    among = (
        "among the calibration tasks"
        if calibration.tasks
        else "(this probe calibration file carries no tasks)"
    )
    plot_phase_diagram(
        path,
        [dict(t) for t in calibration.tasks],
        RegimeThresholds(),
        title=f"{label} {among}",
        highlight={**point, "label": f"{label} ({point['source']})"},
    )
