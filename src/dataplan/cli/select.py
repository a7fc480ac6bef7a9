"""``dataplan select``: choose a training subset (GRADFILTERING's G-SNR or a baseline)."""

from __future__ import annotations

import typer

from dataplan.cli.build import Output, config_command
from dataplan.cli.output import console, emit_json, key_value_table, note
from dataplan.workflows.select_config import SelectConfig


def register(app: typer.Typer) -> None:
    @config_command(app, "select", SelectConfig)
    def select(cfg: SelectConfig, out: Output) -> None:
        """Choose a training subset: G-SNR over a LoRA ensemble (GRADFILTERING) or a baseline.

        Works under `torchrun --nproc-per-node N -m dataplan select ...`: the scoring shards are
        split across processes.
        """
        from dataplan.workflows.select import select as run_select

        result = run_select(cfg)
        from dataplan.compute.distributed import world

        if world()[0] != 0:
            return
        summary = result.summary()
        if out.json:
            emit_json(summary)
            return
        rows = [
            ("method", result.method),
            ("pool", str(result.n_pool)),
            ("kept", f"{result.k} ({result.k / result.n_pool:.1%})"),
            ("order", "lowest first" if cfg.lowest else "highest first"),
        ]
        q = summary["score_quantiles"]
        if q:
            rows.append(("score min/median/max", f"{q[0]:.4g} / {q[50]:.4g} / {q[100]:.4g}"))
        rows += [(f"{stage} (s)", f"{sec:.1f}") for stage, sec in result.seconds.items()]
        if cfg.out is not None:
            rows.append(("subset", cfg.out))
        if cfg.scores_out is not None:
            rows.append(("scores", cfg.scores_out))
        if result.run_dir:
            rows.append(("run folder", result.run_dir))
        console.print(key_value_table(f"dataplan select --method {result.method}", rows))
        for text in result.notes:
            note(text)
