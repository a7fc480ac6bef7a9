"""``dataplan probe [fit]``: short fine-tuning probes, how sure a forecast is, and how deep a probe
pays (arXiv 2606.17649)."""

from __future__ import annotations

import typer

from dataplan.cli.build import Output, config_callback, config_command
from dataplan.cli.output import console, emit_json, key_value_table, note
from dataplan.training.probes import FEATURES
from dataplan.workflows.probe import ProbeConfig
from dataplan.workflows.probe_diagram import ProbeDiagramConfig
from dataplan.workflows.probe_fit import ProbeFitConfig


def _interval(d: dict, name: str) -> str:
    iv = d["intervals"].get(name)
    return "" if iv is None else f"  [{iv[0]:.4g}, {iv[1]:.4g}]"


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Short LoRA fine-tuning probes on labelled examples, measured at each depth of "
        "--steps, one run per seed (`dataplan probe --task T`); `probe fit` turns probe "
        "predictions into the forecast's uncertainty decay, the budget-optimal depth and the "
        "task's regime.",
        no_args_is_help=True,
    )
    app.add_typer(group, name="probe")

    @config_callback(group, "probe", ProbeConfig)
    def probe(cfg: ProbeConfig, out: Output) -> None:
        """Probe: short LoRA fine-tunes on labelled examples, measured at each depth of --steps,
        one run per seed; `probe fit` analyses probe predictions."""
        from dataplan.workflows.probe import run_probe

        summary = run_probe(cfg)
        if out.json:
            emit_json(summary)
            return
        from rich.table import Table

        table = Table(
            title=f"probes: {summary['seeds']} seeds, {summary['examples']['train']} training / "
            f"{summary['examples']['validation']} validation examples (mean ± sd over seeds)"
        )
        names = [n for n in FEATURES if any(n in d for d in summary["by_depth"])]
        table.add_column("steps")
        for n in names:
            table.add_column(n.replace("_", " "))
        for d in summary["by_depth"]:
            cells = [str(d["c"])]
            for n in names:
                v = d.get(n)
                cells.append(
                    "—"
                    if v is None
                    else f"{v['mean']:.3f}" + ("" if v["std"] is None else f" ± {v['std']:.3f}")
                )
            table.add_row(*cells)
        console.print(table)
        console.print(f"probes: {summary['probes_csv']}  plot: {summary['plot']}", markup=False)
        forecast = summary.get("forecast")
        if forecast is None:
            console.print(
                "no --calibration: the features only (a probe calibration, from `calibrate "
                "--probe-steps`, turns them into a forecast)"
            )
            return
        level = f"{forecast['level']:.0%}"
        ftable = Table(title=f"forecast of AUC' from {forecast['feature']}")
        columns = ["steps", "AUC' (mean of seeds)", "seed sd", f"{level} interval"]
        if "target" in forecast:
            columns += [f"n* for τ = {forecast['target']:g}", f"n* {level} interval"]
        for col in columns:
            ftable.add_column(col)
        for d in forecast["by_depth"]:
            lo, hi = d["interval"]
            sd = "—" if d["seed_sd"] is None else f"{d['seed_sd']:.3f}"
            cells = [str(d["c"]), f"{d['auc']:.3f}", sd, f"[{lo:.3f}, {hi:.3f}]"]
            if "n_star" in d:
                n_lo, n_hi = d["n_star_interval"]
                cells += [f"{d['n_star']:.0f}", f"[{n_lo:.0f}, {n_hi:.0f}]"]
            ftable.add_row(*cells)
        console.print(ftable)
        dec = forecast.get("decomposition")
        if dec is None:
            note(str(forecast.get("decomposition_error")))
            return
        c_star = "—" if dec["c_star"] is None else f"{dec['c_star']:.1f} steps"
        console.print(
            key_value_table(
                "how sure",
                [
                    ("L_int (calibration)", f"{dec['L_int']:.4g}"),
                    ("alpha", f"{dec['alpha']:.3g}{_interval(dec, 'alpha')}"),
                    ("K", f"{dec['K']:.3g}{_interval(dec, 'K')}"),
                    ("c*", c_star),
                    ("regime", dec["regime"]),
                    ("plot", forecast["decay_plot"]),
                ],
            )
        )

    @config_command(group, "fit", ProbeFitConfig)
    def fit(cfg: ProbeFitConfig, out: Output) -> None:
        """Fit Û(c) = L_int + K·c^(−α) to probe predictions across seeds; c* and the regime."""
        from dataplan.workflows.probe_fit import fit_probes

        d = fit_probes(cfg)
        if out.json:
            emit_json(d)
            return
        level = f"{d['level']:.0%} intervals, seed bootstrap"
        shares = ", ".join(f"{k} {v:.0%}" for k, v in d["regime_shares"].items() if v > 0)
        rows = [
            ("probes", f"{d['n_rows']} rows, depths {', '.join(f'{c:g}' for c in d['depths'])}"),
            (
                "Û(c)",
                ", ".join(f"{u:.3g}" for u in d["uncertainty"]) + " (across-seed variance)",
            ),
            ("alpha", f"{d['alpha']:.4g}{_interval(d, 'alpha')}"),
            ("K", f"{d['K']:.4g}{_interval(d, 'K')}"),
            (
                "L_int",
                f"{d['L_int']:.4g}" + (" (given)" if d["L_int_given"] else _interval(d, "L_int")),
            ),
            (
                "c*",
                "—" if d["c_star"] is None else f"{d['c_star']:.1f} steps{_interval(d, 'c_star')}",
            ),
            ("regime", d["regime"] + (f" (bootstrap: {shares})" if shares else "")),
            ("intervals", level),
        ]
        if "plot" in d:
            rows.append(("plot", d["plot"]))
        console.print(key_value_table("dataplan probe fit", rows))
        for text in d["notes"]:
            note(text)

    @config_command(group, "diagram", ProbeDiagramConfig)
    def diagram(cfg: ProbeDiagramConfig, out: Output) -> None:
        """Draw a calibration study's tasks on the phase diagram (intrinsic limit, decay rate)."""
        from rich.table import Table

        from dataplan.workflows.probe_diagram import phase_diagram

        d = phase_diagram(cfg)
        if out.json:
            emit_json(d)
            return
        table = Table(title="tasks on the phase diagram")
        for col in ("task", "√L_int", "alpha", "regime"):
            table.add_column(col)
        for t in d["tasks"]:
            alpha = "—" if t.get("alpha") is None else f"{t['alpha']:.2f}"
            table.add_row(t["task"], f"{t['intrinsic'] ** 0.5:.3f}", alpha, t.get("regime") or "—")
        console.print(table)
        counts = ", ".join(f"{k} {v}" for k, v in d["counts"].items() if v)
        console.print(f"{counts}; plot: {d['plot']}", markup=False)
