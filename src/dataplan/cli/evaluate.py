"""``dataplan evaluate``: score a model or a trained adapter on labelled test examples."""

from __future__ import annotations

import typer

from dataplan.cli.build import Output, config_command
from dataplan.cli.output import console, emit_json, key_value_table
from dataplan.workflows.evaluate import EvaluateConfig


def register(app: typer.Typer) -> None:
    @config_command(app, "evaluate", EvaluateConfig)
    def evaluate(cfg: EvaluateConfig, out: Output) -> None:
        """Score a model, or a PEFT adapter on it, on a task's test split or a labelled file."""
        from dataplan.workflows.evaluate import evaluate_model

        result = evaluate_model(cfg)
        if out.json:
            emit_json(result)
            return

        def value(v: float | None) -> str:
            return "—" if v is None else f"{v:.4f}"

        rows = [
            ("model", result["model"]),
            ("adapter", result["adapter"] or "none (the model alone)"),
            ("test examples", f"{result['n']} of {result['data']}"),
            (f"{result['headline']} (headline)", value(result["score"])),
            *(
                (name, value(result[name]))
                for name in ("exact_match", "token_f1", "loglik_accuracy")
                if name != result["headline"]
            ),
            ("majority share of answers", value(result["prediction_majority_share"])),
            ("seconds", f"{result['seconds']:.1f}"),
        ]
        console.print(key_value_table("dataplan evaluate", rows))
