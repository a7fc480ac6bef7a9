"""``dataplan probe fit``: how sure a forecast is, and how deep a probe pays (arXiv 2606.17649)."""

from __future__ import annotations

import typer

from dataplan.cli.build import Output, config_command
from dataplan.cli.output import console, emit_json, key_value_table
from dataplan.workflows.probe_fit import ProbeFitConfig


def _interval(d: dict, name: str) -> str:
    iv = d["intervals"].get(name)
    return "" if iv is None else f"  [{iv[0]:.4g}, {iv[1]:.4g}]"


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Forecast uncertainty from short fine-tuning probes: its decay, the budget-optimal "
        "probe depth, the task's regime.",
        no_args_is_help=True,
    )
    app.add_typer(group, name="probe")

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
                f"{d['L_int']:.4g}"
                + (" (given)" if d["L_int_given"] else _interval(d, "intrinsic")),
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
        for note in d["notes"]:
            console.print(f"[yellow]note:[/yellow] {note}")
