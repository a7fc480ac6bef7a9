"""``dataplan curve``, ``calibrate``, ``calibrations`` and ``auc``: measured data efficiency."""

from __future__ import annotations

import typer

from dataplan.cli.build import JsonOpt, Output, config_command
from dataplan.cli.output import console, emit_json, fmt, key_value_table
from dataplan.workflows.auc import AucConfig
from dataplan.workflows.calibrate import CalibrateOptions
from dataplan.workflows.curve import CurveConfig


def register(app: typer.Typer) -> None:
    @config_command(app, "auc", AucConfig)
    def auc(cfg: AucConfig, out: Output) -> None:
        """Data efficiency (area under the normalised curve) of measured fine-tuning results."""
        from dataplan.workflows.auc import auc_report

        report = auc_report(
            cfg.results, metric=cfg.metric, human_score=cfg.human_score, budgets=cfg.budgets
        )
        if out.json:
            emit_json(report)
            return
        curve = ", ".join(
            f"{n}:{v:.3f}" for n, v in zip(report["curve_n"], report["curve"], strict=True)
        )
        rows = [
            ("file", cfg.results),
            ("metric", report["metric"]),
            ("AUC", fmt(report["auc"])),
            ("zero-shot / ceiling", f"{fmt(report['zero_shot'])} / {fmt(report['ceiling'])}"),
            ("cleaned curve (n:value)", curve),
        ]
        console.print(key_value_table("dataplan auc", rows))

    @app.command()
    def calibrations(
        json_out: JsonOpt = False,
    ) -> None:
        """List the calibrations known by name."""
        from rich.table import Table

        from dataplan.calibrations import list_calibrations

        cals = [c.to_dict() for c in list_calibrations()]
        if json_out:
            emit_json({"calibrations": cals})
            return
        table = Table(title="calibrations (AUC' = c · CoS-Low + I)")
        table.add_column("name", no_wrap=True)
        for col in ("c", "I", "n_max", "residual sd"):  # numbers are never cut
            table.add_column(col, no_wrap=True, justify="right", min_width=max(6, len(col)))
        table.add_column("source")  # wraps when the terminal is narrow
        notes: list[str] = []  # a source's details, once each, under the table
        for c in cals:
            short, _, detail = c["source"].partition(" (")
            if detail:
                detail = detail.removesuffix(")")
                if detail not in notes:
                    notes.append(detail)
                short = f"{short} [{notes.index(detail) + 1}]"
            table.add_row(
                c["name"],
                fmt(c["coef"], 3),
                fmt(c["intercept"], 3),
                str(c["n_max"]),
                fmt(c["residual_std"], 3),
                short,
            )
        console.print(table)
        for i, detail in enumerate(notes, 1):
            console.print(f"[{i}] {detail}", highlight=False)

    @config_command(app, "curve", CurveConfig)
    def curve(cfg: CurveConfig, out: Output) -> None:
        """Measure a data-efficiency curve: fine-tune at each budget, evaluate on held-out data."""
        from rich.table import Table

        from dataplan.evaluation import METRICS
        from dataplan.workflows.curve import measure_curve

        summary = measure_curve(cfg)
        if out.json:
            emit_json(summary)
            return
        table = Table(
            title=f"{summary['model']} on {summary['task']} ({summary['n_test']} test examples)"
        )
        columns = (*METRICS, "prediction_majority_share")
        table.add_column("n", justify="right")
        for metric in columns:
            table.add_column(metric, justify="right")
        for n, row in summary["curve"].items():
            table.add_row(n, *(fmt(row.get(m), 3) for m in columns))
        console.print(table)
        aucs = ", ".join(f"{k} {v:.3f}" for k, v in summary["auc"].items())
        console.print(f"AUC (n_max {summary['n_max']}): {aucs}")
        console.print(
            f"always-majority baseline: {summary['majority_accuracy']:.3f} "
            f"('{summary['majority_label']}')"
        )

    @config_command(app, "calibrate", CalibrateOptions)
    def calibrate(cfg: CalibrateOptions, out: Output) -> None:
        """Fit AUC' = c · CoS-Low + I over tasks; leave-one-task-out scores for CoS-Low and
        baselines."""
        from dataplan.workflows.calibrate import calibrate as run_calibrate
        from dataplan.workflows.calibrate import markdown_table

        result = run_calibrate(cfg.build())
        if out.json:
            emit_json(result)
            return
        cal = result["calibration"]
        console.print(markdown_table(result["tasks"], result["leave_one_task_out"]))
        console.print(
            f"AUC' = {cal['coef']:.4f} · CoS-Low + {cal['intercept']:.4f}  (n_max "
            f"{cal['n_max']}); written to {cfg.out_dir}/calibration.json"
        )
        probe = result.get("probe")
        if probe is not None and "error" in probe:
            console.print(f"[yellow]note:[/yellow] no probe calibration: {probe['error']}")
        elif probe is not None:
            from rich.table import Table

            table = Table(
                title=f"probe calibration ({probe['feature']}, {probe['seeds']} seeds): "
                f"leave-one-task-out MAE and {probe['level']:.0%}-interval coverage; CoS-Low "
                f"alone: MAE {probe['static_loo_mae']:.3f}, coverage "
                f"{probe['static_coverage']:.0%}"
            )
            for col in ("steps", "probe MAE", "coverage", "probe + CoS-Low MAE", "coverage "):
                table.add_column(col)
            for r in probe["by_depth"]:
                joint = r["probe_and_cos_low_loo_mae"] is not None
                table.add_row(
                    f"{r['c']:g}",
                    f"{r['probe_loo_mae']:.3f}",
                    f"{r['probe_coverage']:.0%}",
                    f"{r['probe_and_cos_low_loo_mae']:.3f}" if joint else "—",
                    f"{r['probe_and_cos_low_coverage']:.0%}" if joint else "—",
                )
            console.print(table)
            if "probe_and_cos_low_error" in probe:
                console.print(
                    "[yellow]note:[/yellow] no probe + CoS-Low fit: "
                    f"{probe['probe_and_cos_low_error']}"
                )
            console.print(f"written to {cfg.out_dir}/probe-calibration.json", markup=False)
