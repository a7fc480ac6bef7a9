"""``dataplan calibrate``: fit AUC' = c · CoS-Low + I for a model over a set of tasks.

For each task: the measured curve's AUC (``dataplan curve``, cached) and CoS-Low with its
baselines (``dataplan estimate`` on the task's training pool, in a run folder per task). Then:

- the least-squares fit AUC = c · CoS-Low + I and its leave-one-task-out residuals (the
  calibration file, usable by name or path in ``estimate`` and ``predict``);
- leave-one-task-out Spearman, Pearson and mean absolute AUC error for CoS-Low and for every
  baseline (mean gradient norm, mean confidence, CoS over random examples);
- a table of every task and a scatter plot.

The AUC metric per task [our choice]: option log-likelihood accuracy for tasks with options
(classification, multiple choice), else the task's own metric (exact match or token F1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dataplan.errors import ConfigError
from dataplan.evaluation import headline_metric
from dataplan.io import atomic_path, write_json
from dataplan.maths.forecast import fit_calibration, leave_one_out_scores
from dataplan.options import (
    ExecutorOptions,
    FieldOptions,
    ModelOptions,
    PromptOptions,
    RunOptions,
    cli,
    group_values,
    ints,
    names,
)
from dataplan.plots import plot_calibration
from dataplan.training.settings import TrainSettings
from dataplan.workflows.curve import CurveConfig, measure_curve
from dataplan.workflows.estimate_config import EstimateConfig
from dataplan.workflows.run_folder import record_command

if TYPE_CHECKING:
    from dataplan.models.loading import LoadedModel

log = logging.getLogger(__name__)

PREDICTORS = {
    "cos_low": "CoS-Low",
    "mean_grad_norm": "mean gradient norm",
    "mean_confidence_pool": "mean confidence",
    "cos_random": "CoS over random examples",
}


@dataclass(frozen=True)
class ProbeStudy:
    """Probes of every calibration task (on its estimate's labelled examples), for the probe
    calibration (docs/methods.md §8)."""

    steps: tuple[int, ...]
    seeds: int = 3
    validation: int = 8
    feature: str = "val_loss_drop"

    def __post_init__(self) -> None:
        from dataplan.training.probes import FEATURES

        if self.feature not in FEATURES:
            raise ConfigError(
                f"--probe-feature must be one of {', '.join(FEATURES)}, got {self.feature!r}"
            )
        steps = list(self.steps)
        if not steps or any(c < 1 for c in steps) or steps != sorted(set(steps)):
            raise ConfigError(f"--probe-steps must be increasing positive integers, got {steps}")
        if self.seeds < 2:
            raise ConfigError(f"--probe-seeds must be at least 2, got {self.seeds}")


@dataclass
class CalibrateConfig:
    """A calibration study: the tasks, and the curve and estimate settings shared by all."""

    name: str
    tasks: tuple[str, ...] = ()
    data: tuple[str, ...] = ()
    curve: CurveConfig | None = None
    estimate: EstimateConfig | None = None
    metric: str = "auto"
    out_dir: str = "runs/calibrate"
    min_gain: float | None = 0.05
    probe: ProbeStudy | None = None

    def __post_init__(self) -> None:
        if len(self.tasks) + len(self.data) < 3:
            raise ConfigError("a calibration needs at least 3 tasks")
        labels = [*self.tasks, *(Path(d).stem for d in self.data)]  # each task's folder name
        repeated = sorted({x for x in labels if labels.count(x) > 1})
        if repeated:  # one task twice would leak into its own leave-one-task-out fit
            raise ConfigError(
                f"calibration tasks must be distinct (--tasks and the --data file names): "
                f"{', '.join(repeated)} appear more than once"
            )
        if self.metric not in ("auto", "exact_match", "token_f1", "loglik_accuracy"):
            raise ConfigError(f"unknown metric {self.metric!r}")
        if self.curve is None or self.estimate is None:
            raise ConfigError("calibrate needs curve and estimate settings")


@dataclass(kw_only=True)
class CalibrateOptions(ModelOptions, FieldOptions, PromptOptions, ExecutorOptions, RunOptions):
    """Settings of ``dataplan calibrate`` (the command line's view of :class:`CalibrateConfig`).

    Attributes:
        name: Name of the calibration (usually the model's).
        tasks: Comma-separated suite tasks.
        data: Comma-separated labelled task files (instead of or besides --tasks).
        metric: AUC metric: auto (option log-likelihood when a task has options), exact_match,
            token_f1, loglik_accuracy.
        budgets: Curve budgets; 0 is zero-shot.
        seeds: Curve seeds.
        train: Curve fine-tuning.
        max_test: Test examples per task.
        max_pool: Pool examples scored for confidence per task.
        n_labeled: Low-confidence examples per task.
        adapter_seeds: Fresh-adapter seeds for CoS-Low.
        min_gain: Leave out of the fit tasks whose best fine-tuned score beats neither zero-shot
            nor the majority label by this much (negative: keep all).
        out_dir: Study folder: curves, estimates, table, plot, calibration.json.
        cache: Curve result cache (resumes from it).
        probe_steps: Also probe every task the fit keeps (short LoRA fine-tunes on its
            estimate's labelled examples) at these depths, and fit the probe calibration
            (probe-calibration.json).
        probe_seeds: Probe runs per task.
        probe_validation: Labelled examples each probe holds out to measure itself.
        probe_feature: The probe feature the probe calibration maps to AUC': train_loss_drop,
            val_loss, val_loss_drop or val_accuracy.
        tokenization: How CoS-Low tokenises prompt and answer (split or joint); recorded in the
            calibration, which is then valid for CoS-Low computed the same way only.
    """

    name: str
    tasks: tuple[str, ...] = field(default=(), metadata=cli(parse=names("--tasks")))
    data: tuple[str, ...] = field(default=(), metadata=cli(parse=names("--data")))
    metric: str = "auto"
    budgets: tuple[int, ...] = field(
        default=(0, 16, 64, 256), metadata=cli(parse=ints("--budgets"))
    )
    seeds: tuple[int, ...] = field(default=(0,), metadata=cli(parse=ints("--seeds")))
    train: TrainSettings = field(default_factory=TrainSettings, metadata=cli(nested=True))
    max_test: int | None = 200
    max_pool: int | None = 400
    n_labeled: int = 32
    adapter_seeds: tuple[int, ...] = field(
        default=(0,), metadata=cli(parse=ints("--adapter-seeds"))
    )
    min_gain: float = 0.05
    out_dir: str = "runs/calibrate"
    cache: str | None = None
    probe_steps: tuple[int, ...] = field(default=(), metadata=cli(parse=ints("--probe-steps")))
    probe_seeds: int = 3
    probe_validation: int = 8
    probe_feature: str = "val_loss_drop"
    tokenization: str = "split"

    def build(self) -> CalibrateConfig:
        """The study's config: one curve and one estimate setting shared by every task."""
        first = (
            {"task": self.tasks[0]} if self.tasks else {"data": self.data[0] if self.data else "-"}
        )
        shared: dict[str, Any] = {
            **group_values(self, ModelOptions, FieldOptions, PromptOptions, RunOptions),
            **first,
        }
        curve = CurveConfig(
            budgets=self.budgets,
            seeds=self.seeds,
            train=self.train,
            max_test=self.max_test,
            cache=self.cache,
            **group_values(self, ExecutorOptions),
            **shared,
        )
        estimate = EstimateConfig(
            max_pool=self.max_pool,
            n_labeled=self.n_labeled,
            adapter_seeds=self.adapter_seeds,
            tokenization=self.tokenization,
            **shared,
        )
        return CalibrateConfig(
            name=self.name,
            tasks=self.tasks,
            data=self.data,
            curve=curve,
            estimate=estimate,
            metric=self.metric,
            out_dir=self.out_dir,
            min_gain=None if self.min_gain < 0 else self.min_gain,
            probe=ProbeStudy(
                steps=self.probe_steps,
                seeds=self.probe_seeds,
                validation=self.probe_validation,
                feature=self.probe_feature,
            )
            if self.probe_steps
            else None,
        )


def _auc_metric(
    summary: dict[str, Any], task_metric: str, metric: str, kind: str | None = None
) -> tuple[str, float]:
    aucs = summary["auc"]
    if metric == "auto":
        metric = headline_metric(aucs, task_metric, kind)
    if metric not in aucs:
        raise ConfigError(f"task {summary['task']}: no {metric} curve (have {sorted(aucs)})")
    return metric, aucs[metric]


def calibrate(cfg: CalibrateConfig, loaded: LoadedModel | None = None) -> dict[str, Any]:
    """Run the study (resuming from caches) and write table, plot and calibration file."""
    assert cfg.curve is not None and cfg.estimate is not None  # CalibrateConfig checks both
    if loaded is None:
        cfg.curve.check_model()
    from dataplan.compute.distributed import local_device

    loaded = loaded or cfg.curve.spec.load(device=local_device(cfg.curve.device))
    out = Path(cfg.out_dir)
    rows = []
    entries = [("task", t) for t in cfg.tasks] + [("data", d) for d in cfg.data]
    for kind, ref in entries:
        label = ref if kind == "task" else Path(ref).stem
        task_metric, task_kind = "exact_match", None
        if kind == "task":
            from dataplan.tasks.registry import get_task

            task_metric, task_kind = get_task(ref).metric, get_task(ref).kind
        curve_cfg = replace(
            cfg.curve,
            task=ref if kind == "task" else None,
            data=ref if kind == "data" else None,
            out_dir=str(out / "curves" / label),
        )
        summary = measure_curve(curve_cfg, loaded=loaded)
        metric, auc = _auc_metric(summary, task_metric, cfg.metric, task_kind)
        est_cfg = replace(
            cfg.estimate,
            task=ref if kind == "task" else None,
            data=ref if kind == "data" else None,
            run_dir=str(out / "estimates" / label),
        )
        from dataplan.workflows.estimate import estimate

        est = estimate(est_cfg, loaded=loaded)
        row = {
            "task": label,
            "auc": auc,
            "auc_metric": metric,
            "cos_low": est.cos_low,
            **{k: est.baselines.get(k) for k in PREDICTORS if k != "cos_low"},
            "majority_accuracy": summary["majority_accuracy"],
            "curve": summary["curve"],
        }
        differ = (est.tokenization or {}).get("examples_that_differ", 0)
        row["tokenization_differs"] = differ
        if differ:
            log.warning(
                "%s: %d labelled examples tokenise differently under split and joint: its "
                "CoS-Low (and this calibration) hold for --tokenization %s only",
                label,
                differ,
                est_cfg.tokenization or "split",
            )
        if cfg.probe is not None and in_fit(cfg, row):  # a task left out is not worth probes
            row["probe"] = _probe_task(cfg, est_cfg, out / "probes" / label, loaded)
        rows.append(row)
        log.info("%s: AUC %.3f (%s), CoS-Low %.4f", label, auc, metric, est.cos_low)
    return summarise(cfg, rows, out)


def _probe_task(
    cfg: CalibrateConfig, est_cfg: EstimateConfig, run_dir: Path, loaded: Any
) -> dict[str, Any]:
    """Probes of one task on its estimate's labelled examples: the per-seed feature rows."""
    from dataplan.workflows.probe import ProbeConfig, run_probe

    assert cfg.probe is not None and cfg.curve is not None
    probe_cfg = ProbeConfig(
        **group_values(cfg.curve, ModelOptions, PromptOptions, RunOptions),
        estimate_dir=est_cfg.run_dir,
        steps=cfg.probe.steps,
        seeds=cfg.probe.seeds,
        validation=cfg.probe.validation,
        train=cfg.curve.train,
        run_dir=str(run_dir),
    )
    summary = run_probe(probe_cfg, loaded=loaded)
    return {"steps": list(cfg.probe.steps), "rows": summary["rows"]}


def probe_summary(
    study: ProbeStudy,
    rows: list[dict[str, Any]],
    out: Path,
    tokenization: str = "split",
    train: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The probe calibration of the in-fit tasks (alone and with CoS-Low, tokenised by
    ``tokenization``) beside CoS-Low's own leave-one-task-out error and 80%-interval coverage
    (each task's variance from the other tasks' residuals, as for the probes), per depth; writes
    probe-calibration.json. None if fewer tasks than a leave-one-task-out fit needs (the reason
    is in the study's notes)."""
    from dataplan.maths.forecast import leave_one_out_scores
    from dataplan.maths.probe_calibration import (
        ProbeCalibrationError,
        fit_probe_calibration,
        interval_coverage,
        others_variance,
        task_decompositions,
    )

    depths = list(study.steps)
    features = np.array(
        [
            [
                [
                    next(
                        float(x[study.feature])
                        for x in r["probe"]["rows"]
                        if int(x["seed"]) == s and int(x["c"]) == c
                    )
                    for c in depths
                ]
                for s in range(study.seeds)
            ]
            for r in rows
        ]
    )
    auc = np.array([r["auc"] for r in rows])
    cos_low = np.array([r["cos_low"] for r in rows])
    from dataplan.workflows.probe import probe_training

    made = {"validation": study.validation, "train": probe_training(train or {})}
    try:
        alone = fit_probe_calibration(features, auc, depths, feature=study.feature)
    except ProbeCalibrationError as err:
        return {"error": str(err)}
    joint = None  # with CoS-Low: one coefficient more, one task more needed
    joint_error = None
    try:
        joint = fit_probe_calibration(features, auc, depths, static=cos_low, feature=study.feature)
        joint = replace(joint, tokenization=tokenization, probe=made)
    except ProbeCalibrationError as err:
        joint_error = str(err)
    static = leave_one_out_scores(list(cos_low), auc)
    static_residuals = np.asarray(static["predictions"]) - auc
    static_coverage = interval_coverage(
        static_residuals, others_variance(static_residuals), alone.level
    )
    tasks = [
        {"task": r["task"], "auc": r["auc"], **point}
        for r, point in zip(rows, task_decompositions(alone, features), strict=True)
    ]
    # The tasks travel with the calibration: an estimate draws itself among them.
    alone = replace(alone, tasks=tuple(tasks), probe=made)
    write_json(out / "probe-calibration.json", alone.as_dict())
    if joint is not None:
        write_json(out / "probe-cos-low-calibration.json", joint.as_dict())
    else:  # not one left from an earlier study of more tasks
        (out / "probe-cos-low-calibration.json").unlink(missing_ok=True)
    return {
        "feature": study.feature,
        "seeds": study.seeds,
        "static_loo_mae": static["mae"],
        "static_coverage": static_coverage,
        "tokenization": tokenization,
        **({} if joint_error is None else {"probe_and_cos_low_error": joint_error}),
        "by_depth": [
            {
                "c": a.depth,
                "probe_loo_mae": a.loo_mae,
                "probe_coverage": a.coverage,
                "probe_and_cos_low_loo_mae": None if j is None else j.loo_mae,
                "probe_and_cos_low_coverage": None if j is None else j.coverage,
                "seed_variance": a.seed_variance,
                "residual_variance": a.residual_variance,
            }
            for a, j in zip(
                alone.depths, joint.depths if joint else [None] * len(depths), strict=True
            )
        ],
        "intrinsic": alone.intrinsic,
        "decay": None if alone.decay is None else {"K": alone.decay.K, "alpha": alone.decay.alpha},
        "level": alone.level,
        "depths": depths,
        "tasks": tasks,
    }


def learning_gain(row: dict[str, Any]) -> float:
    """Best fine-tuned score minus the better of zero-shot and always-majority.

    A task whose curve never rises above both measured which label won, not learning (seen on
    SmolLM2: binary tasks collapse to one label), and its normalised AUC is then an artifact of
    the normalisation [our choice: such tasks are left out of the fit].
    """
    metric = row["auc_metric"]
    curve = {int(n): v for n, v in row["curve"].items()}
    trained = [v[metric] for n, v in curve.items() if n > 0 and v.get(metric) is not None]
    base = max(curve.get(0, {}).get(metric) or 0.0, row.get("majority_accuracy") or 0.0)
    return max(trained) - base if trained else float("nan")


def in_fit(cfg: CalibrateConfig, row: dict[str, Any]) -> bool:
    """Whether the fit keeps a task: no ``--min-gain``, or its :func:`learning_gain` reaches it
    (a NaN gain — no fine-tuned point — does not)."""
    return cfg.min_gain is None or bool(learning_gain(row) >= cfg.min_gain)


def summarise(cfg: CalibrateConfig, rows: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """Fit, leave-one-task-out evaluation of every predictor, files.

    With ``cfg.min_gain`` set, tasks whose :func:`learning_gain` is below it stay in the table
    (marked) but out of the fit and the evaluation.
    """
    for r in rows:
        r["learning_gain"] = learning_gain(r)
        r["in_fit"] = in_fit(cfg, r)
    all_rows, rows = rows, [r for r in rows if r["in_fit"]]
    if len(rows) < 3:
        raise ConfigError(
            f"only {len(rows)} of {len(all_rows)} tasks gain at least {cfg.min_gain} over "
            "zero-shot and the majority label; a calibration needs 3 (lower --min-gain)"
        )
    auc = np.array([r["auc"] for r in rows])
    n_max = max(b for b in cfg.curve.budgets) if cfg.curve else 0
    calibration = fit_calibration(
        [r["cos_low"] for r in rows],
        auc,
        name=cfg.name,
        n_max=n_max,
        source=f"dataplan calibrate over {len(rows)} tasks",
    )
    tokenization = (cfg.estimate.tokenization if cfg.estimate else None) or "split"
    calibration = replace(calibration, tokenization=tokenization)
    evaluation = {}
    for key, title in PREDICTORS.items():
        x = [r[key] for r in rows]
        if any(v is None for v in x):
            continue
        scores = leave_one_out_scores(x, auc)
        keys = ("spearman", "pearson", "mae", "in_sample_spearman", "in_sample_p")
        evaluation[key] = {"label": title, **{k: scores[k] for k in keys}}
        if key == "cos_low":
            for r, p in zip(rows, scores["predictions"], strict=True):
                r["predicted_auc_loo"] = p
                r["error"] = p - r["auc"]
    if "cos_low" in evaluation:  # how well it ranks held-out tasks travels with the file
        calibration.extra.update(
            loo_spearman=evaluation["cos_low"]["spearman"],
            loo_pearson=evaluation["cos_low"]["pearson"],
            loo_mae=evaluation["cos_low"]["mae"],
            spearman=evaluation["cos_low"]["in_sample_spearman"],
            spearman_p=evaluation["cos_low"]["in_sample_p"],
        )
    probe = None
    if cfg.probe is not None and all("probe" in r for r in rows):
        from dataplan.store import canonical

        train = canonical(cfg.curve.train) if cfg.curve is not None else {}
        probe = probe_summary(cfg.probe, rows, out, tokenization, train)
    result = {
        "name": cfg.name,
        "n_tasks": len(rows),
        "n_tasks_left_out": len(all_rows) - len(rows),
        "min_gain": cfg.min_gain,
        "calibration": calibration.to_dict(),
        "leave_one_task_out": evaluation,
        "tokenization": {
            "convention": tokenization,
            "tasks_that_differ": [r["task"] for r in all_rows if r.get("tokenization_differs")],
        },
        **({} if probe is None else {"probe": probe}),
        "tasks": all_rows,
    }
    from dataplan.compute.distributed import is_main

    if not is_main():  # under torchrun every rank computes; one writes
        return result
    write_json(out / "calibration.json", calibration.to_dict())
    write_json(out / "study.json", result)
    record_command(out)
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(markdown_table(all_rows, evaluation), encoding="utf-8")
    plot_calibration(out / "scatter.png", all_rows, calibration)
    return result


def markdown_table(rows: list[dict[str, Any]], evaluation: dict[str, Any]) -> str:
    lines = [
        "| task | AUC | metric | gain | in fit | CoS-Low | predicted AUC (LOO) | error | CoS-random | grad norm | confidence |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:

        def f(v: float | None, d: int = 3) -> str:
            return "—" if v is None else f"{v:.{d}f}"

        lines.append(
            f"| {r['task']} | {f(r['auc'])} | {r['auc_metric']} | {f(r.get('learning_gain'))} | "
            f"{'yes' if r.get('in_fit', True) else 'no'} | {f(r['cos_low'], 4)} | {f(r.get('predicted_auc_loo'))} | "
            f"{f(r.get('error'))} | {f(r.get('cos_random'), 4)} | {f(r.get('mean_grad_norm'), 2)} | {f(r.get('mean_confidence_pool'))} |"
        )
    lines += [
        "",
        "| predictor | LOO Spearman | LOO Pearson | LOO MAE | in-sample Spearman (p) |",
        "|---|---|---|---|---|",
    ]
    for e in evaluation.values():

        def g(v: float | None) -> str:
            return "—" if v is None else f"{v:.3f}"

        rho, p = e.get("in_sample_spearman"), e.get("in_sample_p")
        in_sample = "—" if rho is None else f"{rho:+.3f} ({p:.2f})"
        lines.append(
            f"| {e['label']} | {g(e['spearman'])} | {g(e['pearson'])} | {g(e['mae'])} | "
            f"{in_sample} |"
        )
    return "\n".join(lines) + "\n"
