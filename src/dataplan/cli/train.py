"""``dataplan train``: fine-tune with per-example weights and write a PEFT adapter."""

from __future__ import annotations

import typer

from dataplan.cli.build import Output, config_command
from dataplan.cli.output import console, emit_json, fmt, key_value_table
from dataplan.workflows.train import TrainConfig


def register(app: typer.Typer) -> None:
    @config_command(app, "train", TrainConfig)
    def train(cfg: TrainConfig, out: Output) -> None:
        """Fine-tune (LoRA) with per-example weights — uniform, ICA or its baselines."""
        from dataplan.workflows.train import run_train

        summary = run_train(cfg)
        if out.json:
            emit_json(summary)
            return
        rows = [
            ("objective / weighting", f"{summary['objective']} / {summary['weighting']}"),
            ("examples", str(summary["examples"])),
            ("steps", str(summary["steps"])),
            (
                "training loss (mean / last)",
                f"{fmt(summary['train_loss'])} / {fmt(summary['final_loss'])}",
            ),
            *(
                (f"weights at step {w['step']}", f"mean {w['mean']:.3f}, {w['zero']} at 0")
                for w in summary["weights"]
            ),
            ("seconds", f"{summary['seconds']:.1f}"),
            ("adapter", summary["adapter"]),
            ("run folder", summary["run_dir"]),
        ]
        console.print(key_value_table("dataplan train", rows))
