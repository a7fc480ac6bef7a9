"""``estimate --probe auto|off|STEPS``: probe when probing pays, and combine the static and probe
forecasts into one (docs/methods.md §8).

With a probe calibration (``--probe-calibration FILE``, written by ``calibrate --probe-steps``):

- ``auto`` decides from the calibration alone, before any probe runs: no decay of the seed
  variance (α ≤ 0 or K = 0) or a Noise-Dominant intrinsic limit → no probe; otherwise the probe
  depth is the smallest calibrated depth at or beyond c* — c* = (αK/price)^(1/(α+1)) with
  ``--probe-price``, else [our choice] the depth where the optimisation variance falls to the
  intrinsic limit, c_eq = (K/L_int)^(1/α) (beyond it, probing removes less than what no probing
  removes), capped at the deepest calibrated depth;
- ``STEPS`` probes to the deepest of the given depths (each must be calibrated);
- the probes run on the labelled examples of this estimate (``--probe-seeds`` runs), and the
  probe forecast at the chosen depth (variance σ²_p: the calibration's leave-one-task-out error
  there, for ``--probe-seeds`` seeds: :meth:`ProbeCalibration.variance`) is combined with the static forecast (variance σ²_s: the CoS-Low calibration's residual
  variance) by inverse variance (:func:`dataplan.maths.probe.combine`; the two errors are treated
  as independent, which they need not be). n* and its interval follow from the combined AUC'
  (a normal interval at ``--interval``).

The run folder's ``phase-diagram.png`` places the task among the calibration tasks on the
(√L_int, α) plane (:func:`dataplan.workflows.probe.phase_point`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from dataplan.errors import ConfigError


def parse_probe(value: str) -> str | tuple[int, ...]:
    """``off``, ``auto`` or comma-separated increasing positive depths."""
    text = value.strip().lower()
    if text in ("off", "auto"):
        return text
    try:
        steps = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--probe must be off, auto or probe steps such as 16,32; got {value!r}"
        ) from None
    if not steps or any(s < 1 for s in steps) or list(steps) != sorted(set(steps)):
        raise ConfigError(f"--probe steps must be increasing positive integers, got {value!r}")
    return steps


def choose_depth(calibration: Any, price: float | None) -> tuple[int | None, str, dict[str, Any]]:
    """``auto``'s decision: (depth or None, the reason, the numbers behind it)."""
    from dataplan.maths.probe import optimal_depth
    from dataplan.workflows.probe import calibration_regime

    depths = [int(d.depth) for d in calibration.depths]
    decay = calibration.decay
    label = calibration_regime(calibration)
    if decay is None or label is None:
        return None, "the calibration's seed variance does not decay with depth", {}
    intrinsic = calibration.intrinsic
    facts: dict[str, Any] = {
        "regime": label,
        "alpha": decay.alpha,
        "K": decay.K,
        "L_int": intrinsic,
    }
    if label == "Noise-Dominant":
        return None, "Noise-Dominant: probing cannot remove the intrinsic limit", facts
    if price is not None:
        target = optimal_depth(decay.alpha, decay.K, price)
        facts["c_star"] = target
        rule = f"c* = {target:.1f} steps at price {price:g}"
    elif intrinsic > 0:
        # c_eq = (K / L_int)^(1/α), in logs: a small α would overflow a float power.
        log_target = (math.log(decay.K) - math.log(intrinsic)) / decay.alpha
        target = math.inf if log_target > 700 else math.exp(log_target)
        facts["c_eq"] = target
        rule = f"V_opt falls to L_int at {target:.1f} steps"
    else:
        target = float(depths[-1])
        rule = "no intrinsic limit: the deepest calibrated depth"
    if target < 1:
        return None, f"{rule}: less than one step pays", facts
    chosen = next((d for d in depths if d >= target), depths[-1])
    return chosen, f"{label}; {rule} → probe to {chosen} steps", facts


def probe_and_combine(
    cfg: Any,
    calibration: Any,
    static_auc: float | None,
    static_variance: float | None,
    target: float | None,
    n_max: int,
    run_path: Path,
    labelled_file: str | None,
    loaded: Any,
) -> dict[str, Any]:
    """What ``estimate --probe`` reports (module docstring); ``skipped`` says why nothing ran."""
    from scipy.stats import norm

    from dataplan.maths.forecast import budget_for_target, budget_interval
    from dataplan.maths.probe import combine
    from dataplan.options import FieldOptions, ModelOptions, PromptOptions, group_values
    from dataplan.store import key_of
    from dataplan.training.settings import TrainSettings
    from dataplan.workflows.probe import ProbeConfig, run_probe

    mode = parse_probe(cfg.probe)
    report: dict[str, Any] = {"mode": cfg.probe}
    depths = [int(d.depth) for d in calibration.depths]
    if mode == "auto":
        depth, reason, facts = choose_depth(calibration, cfg.probe_price)  # a calibrated depth
        report.update(decision=reason, **facts)
        if depth is None:
            report["skipped"] = reason
            return report
        steps = tuple(d for d in depths if d <= depth)
    else:
        assert isinstance(mode, tuple)
        steps, depth = mode, mode[-1]
        missing = [s for s in steps if s not in depths]
        if missing:
            raise ConfigError(
                f"--probe {','.join(map(str, missing))}: not calibrated depths "
                f"({', '.join(map(str, depths))})"
            )
    source: dict[str, Any] = (
        {"data": labelled_file} if labelled_file is not None else {"estimate_dir": str(run_path)}
    )
    validation = (
        cfg.probe_validation
        if cfg.probe_validation is not None
        else calibration.probe.get("validation", 8)
    )
    train = TrainSettings(**(calibration.probe.get("train") or {}))
    # One probe folder per probe setting: a rerun with another --probe-price (other steps) or
    # another probe calibration (other training settings) probes anew beside the old probes
    # instead of being refused by their folder.
    setting = key_of({"steps": list(steps), "validation": validation, "train": train})
    probe_cfg = ProbeConfig(
        **group_values(cfg, ModelOptions, PromptOptions, FieldOptions),
        steps=steps,
        seeds=cfg.probe_seeds,
        # made as the calibration's probes were: the same hold-out and training settings
        validation=validation,
        train=train,
        calibration=cfg.probe_calibration,
        interval=cfg.interval,
        run_dir=str(run_path / f"probes-{setting[:8]}"),
        progress=cfg.progress,
        **source,
    )
    start = time.perf_counter()
    summary = run_probe(probe_cfg, loaded=loaded)
    own = summary["forecast"].get("decomposition")
    if own is not None:  # this task's own decay (≥ 2 depths and a seed variance that falls)
        report["decomposition"] = {k: own[k] for k in ("alpha", "K", "L_int", "c_star", "regime")}
    at = next(d for d in summary["forecast"]["by_depth"] if d["c"] == depth)
    probe_variance = calibration.variance(depth, cfg.probe_seeds)  # for this many seeds
    report.update(
        depth=depth,
        seeds=cfg.probe_seeds,
        probe_steps_trained=depth * cfg.probe_seeds,
        seconds=round(time.perf_counter() - start, 1),
        probe={"auc": at["auc"], "sd": math.sqrt(probe_variance)},
        probe_run=summary["run_dir"],
    )
    # Without a static forecast (no mean), its variance says nothing: the probe stands alone.
    s_var = math.inf if static_auc is None or static_variance is None else static_variance
    s_mean = at["auc"] if static_auc is None else static_auc
    mean, variance = combine(s_mean, s_var, at["auc"], probe_variance)
    z = float(norm.ppf(0.5 + cfg.interval / 2))
    sd = math.sqrt(variance)
    combined: dict[str, Any] = {
        "auc": mean,
        "sd": sd,
        "interval": [mean - z * sd, mean + z * sd],
    }
    if static_auc is not None:
        report["static"] = {
            "auc": static_auc,
            "sd": None if static_variance is None else math.sqrt(static_variance),
        }
    if target is not None:
        combined["n_star"] = budget_for_target(mean, target, n_max)
        combined["n_star_interval"] = list(
            budget_interval(mean - z * sd, mean + z * sd, target, n_max)
        )
    report["combined"] = combined
    return report
