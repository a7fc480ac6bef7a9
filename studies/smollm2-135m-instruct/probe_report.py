"""docs/probe.md: the probe calibration of the built-in model, from the calibration study.

Reads what ``calibrate-finished.sh --probe-steps 8,16,32,64 --probe-seeds 3`` wrote into
``study/`` (study.json, probe-calibration.json, probe-cos-low-calibration.json and the probe run
folders) — no model is loaded — draws the phase diagram (``dataplan probe diagram``) and writes
docs/probe.md:

- per probe depth c, the leave-one-task-out (LOO) MAE and 80%-interval coverage of the static
  forecast (CoS-Low), the probe forecast, the probe + CoS-Low regression, and the
  inverse-variance combination that ``estimate --probe`` reports (each held-out task combined
  with variances from the other tasks' residuals);
- the risk decomposition: L_int, K, α, the depth where the optimisation variance falls to L_int,
  and c* at several prices;
- the phase diagram and each task's regime, and whether the regime says where probing helped.

    .venv/bin/python studies/smollm2-135m-instruct/probe_report.py [--ship]

``--ship`` also copies the study's probe-calibration.json into the package
(``src/dataplan/calibrations/probes/<name>.json``), where ``estimate --probe`` finds it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np

from dataplan.maths.probe_calibration import interval_coverage, others_variance

HERE = Path(__file__).parent
STUDY = HERE / "study"
DOC = HERE.parent.parent / "docs" / "probe.md"
PACKAGE = HERE.parent.parent / "src" / "dataplan" / "calibrations" / "probes"
PRICES = (1e-3, 1e-4, 1e-5)  # AUC'² of forecast variance a probe step must remove to pay


def combined_errors(static: np.ndarray, probe: np.ndarray, level: float) -> dict:
    """LOO MAE and coverage of the inverse-variance combination of the static and probe
    forecasts (residuals y − forecast of each; variances from the other tasks), as
    ``estimate --probe`` combines them (:func:`dataplan.maths.probe.combine`)."""
    from dataplan.maths.probe import combine

    pairs = [  # with y = 0 a forecast is −residual
        combine(-rs, vs, -rp, vp)
        for rs, vs, rp, vp in zip(
            static, others_variance(static), probe, others_variance(probe), strict=True
        )
    ]
    residual = np.array([-mean for mean, _ in pairs])
    return {
        "mae": float(np.mean(np.abs(residual))),
        "coverage": interval_coverage(residual, [var for _, var in pairs], level),
        "residuals": residual,
    }


def probe_seconds(task: str) -> list[float]:
    found = []
    for path in sorted((STUDY / "probes" / task / "probes").glob("seed*.json")):
        record = json.loads(path.read_text())
        if "seconds" in record:
            found.append(float(record["seconds"]))
    return found


def main() -> None:
    from dataplan.maths.probe import optimal_depth
    from dataplan.maths.probe_calibration import ProbeCalibration
    from dataplan.workflows.estimate_probe import choose_depth
    from dataplan.workflows.probe_diagram import ProbeDiagramConfig, phase_diagram

    global STUDY
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=STUDY, help="another study (a smoke run)")
    parser.add_argument("--doc", type=Path, default=DOC, help="where to write the page")
    parser.add_argument(
        "--ship",
        action="store_true",
        help="also copy probe-calibration.json into the package under the study's name",
    )
    args = parser.parse_args()
    STUDY = args.study.resolve()
    study = json.loads((STUDY / "study.json").read_text())
    probe = study.get("probe")
    if not probe or "by_depth" not in probe:
        raise SystemExit("no probe calibration in study/study.json: run calibrate-finished.sh")
    alone = json.loads((STUDY / "probe-calibration.json").read_text())
    if not (STUDY / "probe-cos-low-calibration.json").exists():
        raise SystemExit(f"no probe + CoS-Low fit: {probe.get('probe_and_cos_low_error')}")
    joint = json.loads((STUDY / "probe-cos-low-calibration.json").read_text())
    rows = [r for r in study["tasks"] if r.get("in_fit", True)]
    names = [r["task"] for r in rows]
    level = float(alone["level"])
    missing = [r["task"] for r in rows if r.get("error") is None]
    if missing:
        raise SystemExit(f"no CoS-Low leave-one-task-out error for {', '.join(missing)}")
    static = -np.array([r["error"] for r in rows])  # error = forecast − y → residual y − forecast
    first = json.loads((STUDY / "probes" / names[0] / "result.json").read_text())
    n_train, n_val = first["examples"]["train"], first["examples"]["validation"]
    features = {
        "val_loss_drop": "the drop of the validation examples' answer loss since step 0",
        "train_loss_drop": "the drop of the training examples' answer loss since step 0",
        "val_loss": "the validation examples' answer loss",
        "val_accuracy": "the validation examples' option accuracy",
    }
    diagram = phase_diagram(ProbeDiagramConfig(study=str(STUDY)))
    regimes = {t["task"]: t for t in diagram["tasks"]}

    lines = [
        "# How sure is the forecast? Probes on the built-in model",
        "",
        "Generated by `studies/smollm2-135m-instruct/probe_report.py` from the calibration study "
        "(the calibrate line of `studies/regenerate.sh`: `calibrate-finished.sh`'s command with "
        "`--probe-steps 8,16,32,64 --probe-seeds 3`); methods in `docs/methods.md §8`. "
        "Model: SmolLM2-135M-Instruct. "
        f"Tasks: the {len(rows)} suite tasks of the CoS-Low calibration (docs/ground-truth.md; "
        "tasks whose fine-tuned curve never beats zero-shot and the majority label are left out "
        "of both fits, and are not probed). A *probe* is a short LoRA fine-tune (the curve "
        f"settings) on the {n_train + n_val} examples the task's `estimate` labelled — "
        f"{n_train} to train, {n_val} held out — one run per seed ({alone['n_seeds']} seeds), "
        "measured at c = "
        + ", ".join(str(int(d["depth"])) for d in alone["depths"])
        + f" optimiser steps. Feature: `{alone['feature']}` "
        f"({features.get(alone['feature'], 'see docs/methods.md §8')}, averaged over seeds), "
        "mapped to the task's measured AUC' by least squares across tasks at each c.",
        "",
        "The calibration ships as `smollm2-135m-instruct` (`src/dataplan/calibrations/probes/`): "
        "`estimate --probe auto` finds it by the CoS-Low calibration's name, and "
        "`dataplan probe --estimate-dir RUN --calibration smollm2-135m-instruct` probes an "
        "estimate's labelled examples (`--run-dir` names the probe's own run folder).",
        "",
        "## Forecast error against probe compute",
        "",
        f"Leave-one-task-out: each task forecast by a fit on the other {len(rows) - 1}. "
        f"Coverage: share of tasks inside their {level:.0%} interval (σ from the other tasks' "
        "residuals). *Combined*: the inverse-variance combination of the static and probe "
        "forecasts that `estimate --probe` reports; *probe + CoS-Low*: one regression on both.",
        "",
        "| c (steps) | static (CoS-Low) MAE | probe MAE | probe + CoS-Low MAE | combined MAE "
        "| coverage static / probe / combined | seed variance V_opt(c) | residual variance σ² |",
        "|---|---|---|---|---|---|---|---|",
    ]
    static_mae = float(np.mean(np.abs(static)))
    cov_static = interval_coverage(static, others_variance(static), level)
    per_depth = []
    for a, j in zip(alone["depths"], joint["depths"], strict=True):
        p = np.array(a["loo_residuals"])
        comb = combined_errors(static, p, level)
        per_depth.append({"c": a["depth"], "probe": p, "combined": comb})
        lines.append(
            f"| {int(a['depth'])} | {static_mae:.3f} | {a['loo_mae']:.3f} | {j['loo_mae']:.3f} "
            f"| {comb['mae']:.3f} | {cov_static:.0%} / {a['coverage']:.0%} / "
            f"{comb['coverage']:.0%} | {a['seed_variance']:.2e} | {a['residual_variance']:.2e} |"
        )
    y = np.array([float(r["auc"]) for r in rows])
    constant_mae = float(np.mean(np.abs(y - (y.sum() - y) / (len(y) - 1))))
    best_probe = min(float(a["loo_mae"]) for a in alone["depths"])

    def against_constant(mae: float) -> str:
        gain = constant_mae - mae
        return f"beats it by {gain:.3f}" if gain > 0.005 else "does no better than it"

    lines += [
        "",
        f"For scale, a forecast that ignores the task — the mean AUC' of the other "
        f"{len(rows) - 1} tasks — has leave-one-task-out MAE {constant_mae:.3f}: the probe "
        f"forecast (best {best_probe:.3f}) {against_constant(best_probe)}, CoS-Low "
        f"({static_mae:.3f}) {against_constant(static_mae)}.",
    ]
    lines.append("")

    depth, reason, _ = choose_depth(ProbeCalibration.from_dict(alone), None)
    if depth is None:
        lines += [
            f"**The stopping rule** (`estimate --probe auto`, no price) **does not probe**: "
            f"{reason}. The forecast stays the static one: leave-one-task-out MAE "
            f"{static_mae:.3f}, {level:.0%}-interval coverage {cov_static:.0%}.",
            "",
        ]
    else:
        at = next(d for d in per_depth if int(d["c"]) == depth)
        lines += [
            f"**At the depth the stopping rule picks** (`estimate --probe auto`, no price: "
            f"{reason}): static MAE {static_mae:.3f} against combined "
            f"{at['combined']['mae']:.3f}; {level:.0%}-interval coverage "
            f"{cov_static:.0%} static, {at['combined']['coverage']:.0%} combined.",
            "",
        ]
    decay = alone.get("decay")
    L = float(alone["intrinsic"])
    lines += ["## Risk decomposition", ""]
    if decay is None:
        lines += [
            "The seed variance does not fall with c on these probes: no decay fit, so no c* and "
            "no regime from the calibration (`estimate --probe auto` then does not probe).",
            "",
        ]
    else:
        K, alpha = float(decay["K"]), float(decay["alpha"])
        lines += [
            f"Û(c) = L_int + K·c^(−α) with L_int = {L:.2e} (√L_int = {math.sqrt(L):.3f} AUC': "
            f"the error no probing removes), K = {K:.3g}, α = {alpha:.2f} "
            f"(log-RMSE of the fit {decay.get('log_rmse', float('nan')):.2f}).",
            "",
        ]
        largest = max(float(d["seed_variance"]) for d in alone["depths"])
        if L > 0 and largest < 0.01 * L:
            lines += [
                f"The seed variance (at most {largest:.1e}) is {L / largest:.0f} times smaller "
                "than L_int at every depth: Û(c) is L_int whatever c, and the fit's small "
                "log-RMSE says only that.",
                "",
            ]
            deepest = alone["depths"][-1]
            slope = abs(float(deepest["coef"][1]))
            if slope > 0:
                feature_sd = math.sqrt(float(deepest["seed_variance"])) / slope
                lines += [
                    f"It is small because the forecast barely moves with the feature: at c = "
                    f"{int(deepest['depth'])} the slope is |β₁| = {slope:.3f} AUC' per unit of "
                    f"{alone['feature']}, so a seed-to-seed spread of the feature of about "
                    f"{feature_sd:.2f} moves the forecast by {slope * feature_sd:.4f}.",
                    "",
                ]
        if alpha <= 0 or K <= 0:
            lines += [
                f"The seed variance does not fall with c (α = {alpha:.2f} ≤ 0 or K = 0): no "
                "probe depth removes more variance than it costs, at any price — c* is not "
                "defined and `estimate --probe auto` does not probe.",
                "",
            ]
        else:
            if L > 0:
                lines += [
                    f"The optimisation variance falls to L_int at c = (K/L_int)^(1/α) = "
                    f"{(K / L) ** (1 / alpha):.1f} steps (what `estimate --probe auto` probes "
                    "to without a price, capped at the deepest calibrated depth).",
                    "",
                ]
            lines += ["| price λ per step | c* = (αK/λ)^(1/(α+1)) |", "|---|---|"]
            for price in PRICES:
                lines.append(f"| {price:g} | {optimal_depth(alpha, K, price):.1f} |")
            lines.append("")

    counts = diagram["counts"]
    lines += [
        "## Phase diagram",
        "",
        "Each task at (√L_int,t, α_t): its own squared LOO error at the deepest c net of its "
        "seed noise, and the decay of its own seed variance (docs/methods.md §8). Thresholds "
        f"(ours; the paper publishes none): Noise-Dominant when √L_int ≥ "
        f"{diagram['thresholds']['noise_sd']}, Static-Sufficient when α ≥ "
        f"{diagram['thresholds']['fast_alpha']} or the shallowest probe's seed variance is "
        "already below L_int, Dynamic-Critical otherwise.",
        "",
        "Regimes: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".",
        "",
        "![the suite tasks on the phase diagram]("
        + os.path.relpath(diagram["plot"], args.doc.resolve().parent)
        + ")",
        "",
        "## Did the regime say where probing helped?",
        "",
        "Per task, |static LOO error| and |probe LOO error| at the deepest c (and the combined "
        "one); *helped* = the probe (combined) forecast is closer than the static one. A "
        "caution on reading it: a task's L_int,t is its own probe residual at the deepest c "
        "(net of seed noise), the same residual the probe error column shows, so a "
        "Noise-Dominant task is one the probe forecast missed by construction; only α_t (the "
        "decay of its seed variance) uses no ground truth.",
        "",
        "| task | AUC' | regime | √L_int,t | α_t | static error | probe error | combined error "
        "| probe s/seed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    deepest = per_depth[-1]
    helped: dict[str, list[float]] = {}
    for i, (name, r) in enumerate(zip(names, rows, strict=True)):
        t = regimes.get(name, {})
        reg = t.get("regime") or "undetermined"
        gain = abs(static[i]) - abs(deepest["combined"]["residuals"][i])
        helped.setdefault(reg, []).append(gain)
        seconds = probe_seconds(name)
        alpha_t = t.get("alpha")
        cells = [
            name,
            f"{r['auc']:.3f}",
            reg,
            f"{math.sqrt(max(t.get('intrinsic') or 0.0, 0.0)):.3f}" if t else "—",
            "—" if alpha_t is None else f"{alpha_t:.2f}",
            f"{abs(static[i]):.3f}",
            f"{abs(deepest['probe'][i]):.3f}",
            f"{abs(deepest['combined']['residuals'][i]):.3f}",
            f"{np.mean(seconds):.0f}" if seconds else "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| regime | tasks | mean of static − combined absolute error at the deepest c "
        "| tasks helped |",
        "|---|---|---|---|",
    ]
    for reg, gains in helped.items():
        lines.append(
            f"| {reg} | {len(gains)} | {np.mean(gains):+.3f} | "
            f"{sum(g > 0 for g in gains)} of {len(gains)} |"
        )
    lines.append("")
    args.doc.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if args.ship:  # what `estimate --probe auto` finds by the CoS-Low calibration's name
        from dataplan.io import atomic_path

        shipped = PACKAGE / f"{study['name']}.json"
        PACKAGE.mkdir(parents=True, exist_ok=True)
        with atomic_path(shipped) as tmp:
            tmp.write_text((STUDY / "probe-calibration.json").read_text(), encoding="utf-8")
        print(f"shipped {shipped}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
