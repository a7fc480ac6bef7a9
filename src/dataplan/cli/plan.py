"""``dataplan plan``: the five answers for one model and task, in one folder and one page."""

from __future__ import annotations

import typer

from dataplan.cli.build import Output, config_command
from dataplan.cli.output import console, emit_json
from dataplan.workflows.plan import PlanConfig


def register(app: typer.Typer) -> None:
    @config_command(app, "plan", PlanConfig)
    def plan(cfg: PlanConfig, out: Output) -> None:
        """Estimate, select, weigh and plan the budget in one folder; write the report page."""
        from rich.table import Table

        from dataplan.workflows.plan import run_plan

        result = run_plan(cfg)
        if out.json:
            emit_json(result)
            return
        table = Table(title=result["title"])
        for col in ("question", "answer", "how sure"):
            table.add_column(col)
        for a in result["answers"]:
            answer = a["answer"] or {}
            table.add_row(
                a["question"],
                answer.get("text", "not answered (step skipped)"),
                answer.get("uncertainty") or "",
            )
        console.print(table)
        for s in result["steps"]:
            if "skipped" in s:
                console.print(f"{s['step']}: {s['skipped']}")
        console.print(f"report: {result['report']}")
