"""Reading what each command left on disk into a report :class:`~dataplan.reporting.page.Section`.

A command's output is recognised by the files it writes (no command records its own name): a
registry maps each kind to a test and a reader, tried in order. Adding a command to the report is
one reader and one registry line. Every reader takes what it finds and leaves out what is not
there (an estimate waiting for labels has no forecast, a probe without calibration no
decomposition), so that a half-finished run still reports what it knows. What every reader
reads alike (JSON, numbers, the command, versions, figures) is in
:mod:`dataplan.reporting.folder_facts`.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataplan.errors import ConfigError, InputError
from dataplan.reporting.folder_facts import (
    command_of,
    interval_text,
    named_figures,
    number_text,
    read_json,
    run_folder_section,
    sibling_png,
    track_record_text,
    versions_of,
)
from dataplan.reporting.page import Answer, Figure, Section

# ---------------------------------------------------------------------------------- estimate


def read_estimate(folder: Path) -> Section:
    config = read_json(folder / "config.json")
    result_path = folder / "result.json"
    command = command_of(
        folder,
        f"dataplan estimate --model {shlex.quote(str(config.get('model')))} "
        f"--run-dir {shlex.quote(str(folder))}",
    )
    section = Section(
        kind="estimate",
        title="How much data: the CoS-Low estimate",
        source=folder,
        command=command,
        settings=config,
        versions=versions_of(folder),
    )
    if not result_path.exists():
        section.cautions.append("the run has not finished: no result.json yet")
        return section
    r = read_json(result_path)
    model = r.get("model")
    if isinstance(model, dict):
        model = (
            f"{model.get('name')} ({model.get('class')}, {model.get('parameters'):,} parameters, "
            f"{model.get('device')}, {model.get('dtype')})"
        )
    section.facts += [
        ("model", str(model)),
        ("pool", f"{r.get('n_pool')} examples, {r.get('n_low')} least confident"),
        ("CoS-Low", number_text(r.get("cos_low"))),
        ("zero-shot accuracy", number_text(r.get("zero_shot_accuracy"))),
    ]
    if r.get("status") == "needs_labels":
        section.answers["data"] = Answer(
            "not yet: label the chosen examples and rerun (the forecast needs their answers)"
        )
    forecast = r.get("forecast") or {}
    probe = r.get("probe") or {}
    combined = probe.get("combined") or {}
    # The task's own regime (its point on the phase diagram) before the calibration's model-wide one.
    regime = (probe.get("phase_point") or {}).get("regime") or probe.get("regime")
    if forecast:
        level = forecast.get("interval_level")
        auc = combined.get("auc", forecast.get("auc"))
        auc_interval = combined.get("interval", forecast.get("auc_interval"))
        section.facts += [
            ("calibration", str(forecast.get("calibration"))),
            ("predicted AUC′", number_text(auc)),
            ("AUC′ interval", interval_text(auc_interval, 3, level) or "—"),
        ]
        n_star = combined.get("n_star", forecast.get("n_star"))
        n_interval = combined.get("n_star_interval", forecast.get("n_star_interval"))
        if n_star is not None:
            text = f"≈ {number_text(n_star, 0)} examples to reach {number_text(forecast.get('target'))}"
            section.answers["data"] = Answer(text, interval_text(n_interval, 0, level), regime)
        elif auc is not None:
            section.answers["data"] = Answer(
                f"predicted data-efficiency AUC′ {number_text(auc)} (give --target for n*)",
                interval_text(auc_interval, 3, level),
                regime,
            )
        trust = f"forecast interval {interval_text(auc_interval, 3, level) or 'not available'}"
        if not combined and (track := track_record_text(forecast)) is not None:
            trust += f"; the calibration's {track}"
        if probe.get("decision") and probe.get("decision") != probe.get("skipped"):
            trust += f"; probing: {probe['decision']}"  # else "how sure" says it once
        how_sure = _probe_cost(probe) or (
            "not probed: " + str(probe["skipped"]) if probe.get("skipped") else None
        )
        section.answers["trust"] = Answer(trust, how_sure, regime)
        if forecast.get("warning"):
            section.cautions.append(str(forecast["warning"]))
            for key in ("data", "trust"):
                if key in section.answers:
                    section.answers[key].caution = _slope(str(forecast["warning"]))
    if probe:
        section.facts.append(("probe", _probe_summary(probe)))
        if probe.get("skipped"):
            section.cautions.append(f"probe skipped: {probe['skipped']}")
    if r.get("note"):
        section.cautions.append(str(r["note"]))
    warning = (r.get("tokenization") or {}).get("warning")
    if warning:
        section.cautions.append(str(warning))
    point = probe.get("phase_point")
    section.facts += _phase_facts(point)
    section.figures = named_figures(
        folder, ("curve.png", "forecast curve with its interval band"), _phase_figure(point)
    )
    return section


def _phase_facts(point: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The task's point on the phase diagram (``phase_point`` of an estimate or probe run)."""
    if not point:
        return []
    regime = f"regime {point['regime']}" if point.get("regime") else "no regime"
    text = (
        f"√L_int {number_text(max(point['intrinsic'], 0.0) ** 0.5)}, α {number_text(point['alpha'], 2)} "
        f"from {point.get('source')}: {regime}"
    )
    return [("phase diagram", text)]


def _phase_figure(point: dict[str, Any] | None) -> tuple[str, str]:
    placed = f" (placed by {point['source']})" if point else ""
    return (
        "phase-diagram.png",
        f"the task on the phase diagram among the calibration tasks{placed}",
    )


def _slope(warning: str) -> str:
    """The headline caution of a forecast warning about its calibration."""
    if "non-positive slope" in warning:
        return "the calibration's slope is not positive on this model: treat this as a guess"
    return "the calibration ranks tasks poorly: treat this as a guess"


def _probe_cost(probe: dict[str, Any]) -> str | None:
    if "probe_steps_trained" in probe:
        return f"{probe['probe_steps_trained']} probe steps spent"
    if probe.get("c_star") is not None:
        return f"budget-optimal probe compute c* = {number_text(probe['c_star'], 1)} steps"
    return None


def _probe_summary(probe: dict[str, Any]) -> str:
    parts = [f"mode {probe.get('mode')}"]
    for key in ("decision", "regime"):
        if probe.get(key):
            parts.append(f"{key} {probe[key]}")
    if probe.get("alpha") is not None:
        parts.append(f"α {number_text(probe['alpha'], 2)}")
    if probe.get("c_star") is not None:
        parts.append(f"c* {number_text(probe['c_star'], 1)}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------- probe


def read_probe(folder: Path) -> Section:
    section = run_folder_section(
        folder,
        "probe",
        "How sure: short fine-tuning probes",
        f"dataplan probe --run-dir {shlex.quote(str(folder))}",
    )
    if not (folder / "result.json").exists():
        section.cautions.append("the run has not finished: no result.json yet")
        return section
    r = read_json(folder / "result.json")
    section.facts += [
        ("examples", f"{r['examples']['train']} train, {r['examples']['validation']} validation"),
        ("seeds × steps", f"{r.get('seeds')} × {', '.join(str(s) for s in r.get('steps', []))}"),
    ]
    forecast = r.get("forecast") or {}
    by_depth = forecast.get("by_depth") or []
    if by_depth:
        last = by_depth[-1]
        section.answers["data"] = Answer(
            f"predicted AUC′ {number_text(last.get('auc'))} after {last.get('c')} probe steps",
            interval_text(last.get("interval"), 3, forecast.get("level")),
        )
        for row in by_depth:
            section.facts.append(
                (
                    f"c = {row.get('c')}",
                    f"AUC′ {number_text(row.get('auc'))} ± {number_text(row.get('seed_sd'))} (seeds), "
                    f"interval {interval_text(row.get('interval')) or '—'}",
                )
            )
    d = forecast.get("decomposition")
    if d:
        text = (
            f"Û(c) = L_int + K·c^(−α): α {number_text(d.get('alpha'), 2)}, "
            f"L_int {number_text(d.get('L_int'), 4)}; c* = {number_text(d.get('c_star'), 1)} steps"
        )
        section.answers["trust"] = Answer(text, _uncertainty(d), d.get("regime"))
    if forecast.get("decomposition_error"):
        section.cautions.append(str(forecast["decomposition_error"]))
    section.facts += _phase_facts(forecast.get("phase_point"))
    section.figures = named_figures(
        folder,
        ("probes.png", "probe features by step count, per seed"),
        ("decay.png", "uncertainty Û(c) against probe compute, with c*"),
        _phase_figure(forecast.get("phase_point")),
    )
    return section


def _uncertainty(d: dict[str, Any]) -> str | None:
    intervals = d.get("intervals") or {}
    alpha = interval_text(intervals.get("alpha"), 2)
    return None if alpha is None else f"α in {alpha}"


# ---------------------------------------------------------------------------------- select


def read_select(folder: Path) -> list[Section]:
    config = read_json(folder / "config.json")
    sections = []
    for path in sorted(folder.glob("result-*.json")):
        r = read_json(path)
        method = r.get("method", path.stem.removeprefix("result-"))
        section = Section(
            kind="select",
            title=f"Which examples: selection by {method}",
            source=path,
            command=command_of(
                folder, f"dataplan select --method {method} --run-dir {shlex.quote(str(folder))}"
            ),
            settings={**config, **(r.get("settings") or {})},
            versions=versions_of(folder),
            cautions=[str(n) for n in r.get("notes") or []],
        )
        q = r.get("score_quantiles") or {}
        balance = (r.get("settings") or {}).get("balance_by")
        text = (
            f"a random {r.get('k')} of {r.get('n_pool')}"
            if method == "random"
            else f"the {r.get('k')} best of {r.get('n_pool')} by {method}"
        )
        section.answers["examples"] = Answer(text + (f", balanced by {balance}" if balance else ""))
        section.facts += [
            ("selected", f"{r.get('k')} of {r.get('n_pool')}"),
            ("score 0/50/100%", " / ".join(number_text(q.get(k)) for k in ("0", "50", "100"))),
            ("first selected", ", ".join(str(i) for i in (r.get("selected_ids") or [])[:8])),
        ]
        scores = folder / f"scores-{method}.parquet"
        if scores.exists():
            section.figures += _selection_figures(scores, method)
        sections.append(section)
    return sections


def _selection_figures(scores: Path, method: str) -> list[Figure]:
    """The subset's mix of labels (or answer lengths) against the pool's, and — for a scored
    method — the pool's scores with the subset's, drawn from the scores table."""
    import io

    import numpy as np

    from dataplan.io import read_parquet
    from dataplan.plots import plot_selection_mix, plot_selection_scores

    table = read_parquet(scores)
    selected = np.asarray(table["selected"], dtype=bool)
    figures = []
    if "group" in table:
        buffer = io.BytesIO()
        plot_selection_mix(buffer, list(table["group"]), selected, title=f"{method} subset")
        caption = "share of each label (or answer length) in the pool and in the subset"
        figures.append(Figure(caption, scores, buffer.getvalue()))
    if method != "random":  # random's scores are the draw itself
        buffer = io.BytesIO()
        scored = np.asarray(table["score"], dtype=float)
        plot_selection_scores(buffer, scored, selected, title=f"{method} scores")
        figures.append(Figure("scores of the pool and of the subset", scores, buffer.getvalue()))
    return figures


# ---------------------------------------------------------------------------------- weigh / train


def read_weigh(folder: Path) -> Section:
    section = run_folder_section(
        folder,
        "weigh",
        "How to weight: ICA weights",
        f"dataplan weigh --run-dir {shlex.quote(str(folder))}",
    )
    if (folder / "result.json").exists():
        r = read_json(folder / "result.json")
        q = r.get("weight_quantiles") or {}
        section.answers["weights"] = Answer(
            f"ICA weights for {r.get('n')} examples: mean {number_text(r.get('weight_mean'), 2)}, "
            f"{r.get('weight_zero')} silenced",
            "weights 10/50/90%: "
            + " / ".join(number_text(q.get(k), 2) for k in ("10", "50", "90")),
        )
        section.facts += [
            ("examples", str(r.get("n"))),
            ("weight mean", number_text(r.get("weight_mean"))),
            (
                "weight 0/10/50/90/100%",
                " / ".join(number_text(q.get(k)) for k in sorted(q, key=int)),
            ),
        ]
    section.figures = named_figures(folder, ("weights.png", "histogram of the example weights"))
    return section


def read_train(folder: Path) -> Section:
    section = run_folder_section(
        folder,
        "train",
        "How to weight: the weighted fine-tune",
        f"dataplan train --run-dir {shlex.quote(str(folder))}",
    )
    if (folder / "result.json").exists():
        r = read_json(folder / "result.json")
        section.answers["weights"] = Answer(
            f"{r.get('objective')} with {r.get('weighting')} weights over {r.get('examples')} "
            f"examples, {r.get('steps')} steps: final loss {number_text(r.get('final_loss'))}"
        )
        section.facts += [
            ("adapter", str(r.get("adapter"))),
            ("objective / weighting", f"{r.get('objective')} / {r.get('weighting')}"),
            ("steps × effective batch", f"{r.get('steps')} × {r.get('effective_batch')}"),
            ("mean training loss", number_text(r.get("train_loss"))),
        ]
        for w in r.get("weights") or []:
            section.facts.append(
                (
                    f"weights at step {w.get('step')}",
                    f"mean {number_text(w.get('mean'))}, {w.get('zero')} at 0",
                )
            )
    section.figures = named_figures(
        folder, ("loss.png", "training loss"), ("weights.png", "histogram of the weights")
    )
    return section


# ---------------------------------------------------------------------------------- curve / calibrate

METRIC_ORDER = ("exact_match", "loglik_accuracy", "token_f1")


def read_curve(folder: Path) -> Section:
    s = read_json(folder / "summary.json")
    aucs = s.get("auc") or {}
    metric = next((m for m in METRIC_ORDER if m in aucs), None)
    section = Section(
        kind="curve",
        title=f"Measured: the data-efficiency curve of {s.get('task')}",
        source=folder,
        command=command_of(
            folder,
            f"dataplan curve --task {s.get('task')} --budgets "
            f"{','.join(str(b) for b in s.get('budgets', []))} --seeds "
            f"{','.join(str(x) for x in s.get('seeds', []))}",
        ),
        settings={k: s[k] for k in ("task", "model", "budgets", "seeds", "train") if k in s},
    )
    if metric is not None:
        spread = s.get("spread_over_seeds") or {}
        top = str(s.get("n_max"))
        sd = (spread.get(top) or {}).get(metric)
        section.answers["data"] = Answer(
            f"measured AUC {number_text(aucs[metric])} ({metric}) up to {s.get('n_max')} examples",
            None if sd is None else f"± {number_text(sd)} across seeds at n = {top}",
        )
    for n, row in (s.get("curve") or {}).items():
        section.facts.append(
            (f"n = {n}", ", ".join(f"{k} {number_text(v)}" for k, v in row.items()))
        )
    section.facts.append(
        (
            "majority baseline",
            f"{s.get('majority_label')!r}: {number_text(s.get('majority_accuracy'))}",
        )
    )
    section.figures = named_figures(folder, ("curve.png", "measured learning curve"))
    return section


def read_calibrate(folder: Path) -> Section:
    study = read_json(folder / "study.json")
    cal = study.get("calibration") or {}
    loo = (study.get("leave_one_task_out") or {}).get("cos_low") or {}
    section = Section(
        kind="calibrate",
        title=f"How sure: the calibration {study.get('name')}",
        source=folder,
        command=command_of(folder, f"dataplan calibrate --name {study.get('name')}"),
        settings={k: study[k] for k in ("name", "n_tasks", "min_gain") if k in study},
    )
    section.answers["trust"] = Answer(
        f"leave-one-task-out MAE of AUC′ {number_text(loo.get('mae'))} over {study.get('n_tasks')} "
        f"tasks (slope {number_text(cal.get('coef'))})",
        f"Spearman {number_text(loo.get('spearman'), 2)} left out",
    )
    if isinstance(cal.get("coef"), (int, float)) and cal["coef"] <= 0:
        section.cautions.append(
            "the calibration's slope is not positive: CoS-Low does not order these tasks"
        )
    probe = study.get("probe") or {}
    for row in probe.get("by_depth") or []:
        section.facts.append(
            (
                f"probe c = {row.get('c')}",
                f"LOO MAE {number_text(row.get('probe_loo_mae'))} (static "
                f"{number_text(probe.get('static_loo_mae'))}), coverage {number_text(row.get('probe_coverage'), 2)}",
            )
        )
    if probe.get("error"):
        section.cautions.append(str(probe["error"]))
    section.figures = named_figures(
        folder,
        ("scatter.png", "CoS-Low against the measured AUC′ per task"),
        ("phase-diagram.png", "the tasks on the phase diagram"),
    )
    return section


# ---------------------------------------------------------------------------------- scaling


def read_scaling_fit(path: Path) -> Section:
    r = read_json(path)
    heldout = r.get("heldout") or {}
    section = Section(
        kind="scaling fit",
        title=f"What compute buys: the {r.get('form')} scaling law",
        source=path,
        command=f"dataplan scaling fit {r.get('runs_file', 'RUNS')} --out {path}",
        settings=r.get("settings") or {},
        cautions=[str(n) for n in r.get("notes") or []],
    )
    section.answers["compute"] = Answer(
        f"{r.get('equation')}", f"held-out RMSE {number_text(heldout.get('rmse'))}"
    )
    section.figures = sibling_png(path, "the law against the measured runs")
    for name, value in (r.get("params") or {}).items():
        section.facts.append((name, number_text(value, 4)))
    return section


def read_scaling_plan(path: Path) -> Section:
    r = read_json(path)
    best = r.get("best") or {}
    section = Section(
        kind="scaling plan",
        title="What compute buys: the budget plan",
        source=path,
        command=f"dataplan scaling plan --compute-tokens {r.get('compute_tokens')} --json",
        cautions=[str(n) for n in r.get("notes") or []],
    )
    section.answers["compute"] = Answer(
        f"{number_text(r.get('compute_tokens'), 0)} tokens: {best.get('n_examples')} examples by "
        f"{best.get('strategy')}, predicted {number_text(best.get('predicted_performance'))}",
        interval_text(best.get("interval")),
    )
    for row in r.get("per_strategy") or []:
        extrapolated = " (extrapolated)" if row.get("extrapolated") else ""
        section.facts.append(
            (
                str(row.get("strategy")),
                f"{row.get('n_examples')} examples of {number_text(row.get('mean_tokens'), 1)} tokens → "
                f"{number_text(row.get('predicted_performance'))}, interval "
                f"{interval_text(row.get('interval')) or '—'}{extrapolated}",
            )
        )
    if best.get("extrapolated"):
        section.cautions.append(
            "the best plan lies outside the range the law was fitted on (extrapolated)"
        )
    section.figures = sibling_png(path, "best predicted performance against compute")
    return section


# ---------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Reader:
    """How to recognise one command's output and read it."""

    kind: str
    matches: Callable[[Path], bool]
    read: Callable[[Path], Section | list[Section]]


def _json_keys(path: Path) -> set[str]:
    if path.suffix != ".json" or not path.is_file():
        return set()
    try:
        data = read_json(path)
    except InputError:
        return set()
    return set(data) if isinstance(data, dict) else set()


PLAN_STEPS: dict[str, tuple[str, ...]] = {
    "estimate": ("estimate",),
    "select": ("select",),
    "weigh": ("weigh",),
    "scaling": ("scaling-fit.json", "scaling-plan.json"),
}
"""What each step of ``dataplan plan --out DIR`` writes into DIR, in the order of its report."""


def read_plan(folder: Path) -> list[Section]:
    """A plan's folder: the sections of the steps its plan.json says ran (a folder left from an
    earlier plan with other steps is not read), in the plan's order."""
    steps = read_json(folder / "plan.json")["steps"]
    ran = [s["step"] for s in steps if "skipped" not in s]
    paths = [folder / name for step in ran for name in PLAN_STEPS.get(step, ())]
    return [s for p in paths if p.exists() for s in read_run(p)]


READERS: tuple[Reader, ...] = (
    Reader("plan", lambda p: "steps" in _json_keys(p / "plan.json"), read_plan),
    Reader("calibrate", lambda p: (p / "study.json").exists(), read_calibrate),
    Reader("curve", lambda p: (p / "summary.json").exists() and (p / "points.json").exists(), read_curve),
    Reader("estimate", lambda p: (p / "confidences.parquet").exists(), read_estimate),
    Reader("probe", lambda p: (p / "probes.csv").exists(), read_probe),
    Reader("select", lambda p: any(p.glob("result-*.json")), read_select),
    Reader("weigh", lambda p: (p / "demonstrations.safetensors").exists(), read_weigh),
    Reader("train", lambda p: (p / "loss.png").exists() and (p / "config.json").exists(), read_train),
    Reader("scaling fit", lambda p: {"equation", "params", "form"} <= _json_keys(p), read_scaling_fit),
    Reader("scaling plan", lambda p: {"compute_tokens", "best", "per_strategy"} <= _json_keys(p), read_scaling_plan),
)  # fmt: skip
"""Tried in order; the first that matches reads the folder (or JSON file)."""


def read_run(path: str | Path) -> list[Section]:
    """The report sections of one run folder (or a saved ``scaling fit``/``plan`` JSON)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such run folder or file")
    for reader in READERS:
        if reader.matches(p):
            try:
                out = reader.read(p)
            except (KeyError, TypeError, AttributeError, IndexError) as err:
                raise InputError(
                    f"a {reader.kind} output this version cannot read ({type(err).__name__}: {err})",
                    path=p,
                ) from None
            return out if isinstance(out, list) else [out]
    raise ConfigError(
        f"{p}: not the output of a dataplan command (plan, estimate, probe, select, weigh, "
        "train, curve or calibrate folder, or a scaling fit/plan JSON)"
    )
