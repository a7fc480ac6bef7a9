"""``dataplan scaling runs|fit|plan``: dataset-volume scaling laws (arXiv 2505.06150)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dataplan.cli.build import JsonOpt, Output, config_command
from dataplan.cli.output import (
    console,
    emit_json,
    fmt,
    key_value_table,
    note,
    setup_logging,
)
from dataplan.errors import ConfigError
from dataplan.workflows.scaling_runs import ScalingRunsConfig


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Dataset-volume scaling laws: fit runs, plan a compute budget.", no_args_is_help=True
    )
    app.add_typer(group, name="scaling")

    @config_command(group, "runs", ScalingRunsConfig)
    def runs(cfg: ScalingRunsConfig, out: Output) -> None:
        """Fine-tune at each (N, strategy) under a compute budget and record one row per run."""
        rows = cfg.run()
        if out.json:
            emit_json({"out": cfg.out, "runs": rows})
            return
        console.print(f"wrote {len(rows)} runs to {cfg.out}", markup=False)

    @group.command("fit")
    def scaling_fit(
        runs: Annotated[
            Path,
            typer.Argument(
                help="Runs file (CSV or Parquet): n_examples, mean_tokens, model_params, performance, …"
            ),
        ],
        form: Annotated[
            str, typer.Option(help="volume, tokens, examples or chinchilla.")
        ] = "volume",
        holdout: Annotated[
            str,
            typer.Option(
                help="point (leave out every seed of one N, L̄, M), run, or a column to leave one "
                "group out (e.g. strategy)."
            ),
        ] = "point",
        loss: Annotated[
            str, typer.Option(help="Robust loss: soft_l1, huber or linear (plain least squares).")
        ] = "soft_l1",
        bootstrap: Annotated[
            int, typer.Option(help="Bootstrap resamples for the intervals.")
        ] = 200,
        seed: Annotated[int, typer.Option(help="Seed of the fit starts and the bootstrap.")] = 0,
        strategy_effects: Annotated[
            bool,
            typer.Option(
                help="One intercept per subsampling strategy (P = law + E_s): for runs where subsets "
                "of equal volume differ by how they were chosen."
            ),
        ] = False,
        out: Annotated[
            Path | None, typer.Option(help="Save the fitted law as JSON (for `scaling plan`).")
        ] = None,
        plot: Annotated[
            Path | None, typer.Option(help="Save a PNG of the fit over the runs.")
        ] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Fit a scaling law robustly, with bootstrap intervals and held-out comparison of the forms."""
        setup_logging(True)
        from dataplan.workflows.scaling import fit_runs, plot_fit

        d = fit_runs(
            runs,
            form=form,
            holdout=holdout,
            loss=loss,
            n_bootstrap=bootstrap,
            seed=seed,
            strategy_effects=strategy_effects,
        )
        if out is not None:
            from dataplan.io import write_json

            write_json(out, d)
        if plot is not None:
            plot_fit(d, runs, plot)
        if json_out:
            emit_json(
                {
                    k: v
                    for k, v in d.items()
                    if not k.startswith("bootstrap_") and k != "internal_params"
                }
            )
            return
        from rich.table import Table

        table = Table(title=f"{d['equation']} on {d['n_runs']} runs")
        for col in ("parameter", "value", "interval"):
            table.add_column(col)
        for name, value in d["params"].items():
            iv = d["intervals"].get(name)
            table.add_row(
                name,
                f"{value:.4g}",
                "fixed"
                if name in d["fixed"]
                else ("—" if iv is None else f"[{iv[0]:.4g}, {iv[1]:.4g}]"),
            )
        console.print(table)
        comp = Table(
            title=f"forms by held-out error (leave one {d['heldout']['by']} out; runs every form "
            "could predict)"
        )
        for col in ("form", "equation", "RMSE", "MAE", "runs"):
            comp.add_column(col)
        for row in d["comparison"]:
            comp.add_row(
                row["form"],
                row.get("equation", row.get("error", "")),
                fmt(row.get("heldout_rmse")),
                fmt(row.get("heldout_mae")),
                str(row.get("heldout_n", "—")),
            )
        console.print(comp)
        for text in d["notes"]:
            note(text)

    @group.command("plan")
    def scaling_plan(
        fit: Annotated[
            Path, typer.Option("--fit", help="Law JSON written by `scaling fit --out`.")
        ],
        compute_tokens: Annotated[float, typer.Option(help="Training tokens the budget buys.")],
        max_examples: Annotated[
            int | None,
            typer.Option(help="Most examples available (default: the pool the runs recorded)."),
        ] = None,
        model_params: Annotated[
            float | None,
            typer.Option(help="Model size to plan for (default: the runs' median)."),
        ] = None,
        plot: Annotated[
            Path | None, typer.Option(help="Save a PNG of predicted performance against compute.")
        ] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """The (N, L̄, strategy) with the best predicted performance for a compute budget."""
        setup_logging(True)
        from dataplan.workflows.scaling import plan, plot_plan, read_law

        law = read_law(fit)  # checked field by field: a bad file is a ConfigError naming it
        try:
            result = plan(law, compute_tokens, max_examples=max_examples, model_params=model_params)
        except ConfigError as err:
            raise ConfigError(f"{fit}: {err}") from None
        if plot is not None:
            plot_plan(law, plot, max_examples=max_examples, model_params=model_params)
        if json_out:
            emit_json(result)
            return
        b = result["best"]
        iv = b["interval"]
        rows = [
            ("budget (tokens)", f"{compute_tokens:,.0f}"),
            ("best strategy", b["strategy"]),
            ("examples N", f"{b['n_examples']:,}"),
            ("mean tokens L̄", f"{b['mean_tokens']:.1f}"),
            ("epochs", f"{b['epochs']:.2f}"),
            (
                "predicted performance",
                fmt(b["predicted_performance"], 3)
                + ("" if iv is None else f"  [{iv[0]:.3f}, {iv[1]:.3f}]"),
            ),
            ("within the fitted runs", "no (extrapolated)" if b["extrapolated"] else "yes"),
        ]
        console.print(key_value_table("dataplan scaling plan", rows))
        for text in result["notes"]:
            note(text)
