"""``dataplan weigh``: ICA weights of a training set from a small trusted holdout."""

from __future__ import annotations

import typer

from dataplan.cli.build import Output, config_command
from dataplan.cli.output import console, emit_json, key_value_table
from dataplan.workflows.weigh import WeighConfig


def register(app: typer.Typer) -> None:
    @config_command(app, "weigh", WeighConfig)
    def weigh(cfg: WeighConfig, out: Output) -> None:
        """Weigh training examples by in-context approximation (ICA) of their holdout loss."""
        from dataplan.workflows.weigh import weigh as run_weigh

        result = run_weigh(cfg)
        summary = result.summary()
        if out.json:
            emit_json(summary)
            return
        q = summary["weight_quantiles"]
        rows = [
            ("examples", str(summary["n"])),
            ("demonstrations", f"{cfg.ica.k} per example ({cfg.ica.demos})"),
            ("weight mean", f"{summary['weight_mean']:.3f}"),
            ("weight 10% / 50% / 90%", f"{q[10]:.3f} / {q[50]:.3f} / {q[90]:.3f}"),
            ("weight 0", str(summary["weight_zero"])),
            *((f"{stage} (s)", f"{sec:.1f}") for stage, sec in result.seconds.items()),
            ("weights", cfg.out),
            ("run folder", result.run_dir),
        ]
        console.print(key_value_table("dataplan weigh", rows))
