"""``dataplan report``: one self-contained HTML page from existing run folders."""

from __future__ import annotations

import typer

from dataplan.cli.build import Output, config_command
from dataplan.cli.output import console, emit_json
from dataplan.workflows.report import ReportConfig


def register(app: typer.Typer) -> None:
    @config_command(app, "report", ReportConfig)
    def report(cfg: ReportConfig, out: Output) -> None:
        """One page (HTML, self-contained) answering the five questions from run folders."""
        from rich.table import Table

        from dataplan.workflows.report import report as build

        plan = build(cfg)
        if out.json:
            emit_json(plan)
            return
        table = Table(title="dataplan report")
        for col in ("question", "answer", "how sure"):
            table.add_column(col)
        for a in plan["answers"]:
            answer = a["answer"] or {}
            table.add_row(
                a["question"],
                answer.get("text", "not answered by the runs given"),
                answer.get("uncertainty") or "",
            )
        console.print(table)
        console.print(f"report: {plan['report']}")
