"""``dataplan report``: one self-contained HTML page from existing run folders."""

from __future__ import annotations

from typing import Any

import typer

from dataplan.cli.build import Output, config_command
from dataplan.cli.output import console, emit_json
from dataplan.workflows.report import ReportConfig


def register(app: typer.Typer) -> None:
    @config_command(app, "report", ReportConfig)
    def report(cfg: ReportConfig, out: Output) -> None:
        """One page (HTML, self-contained) answering the five questions from run folders."""
        from dataplan.workflows.report import report as build

        plan = build(cfg)
        if out.json:
            emit_json(plan)
            return
        print_answers(plan, "not answered by the runs given")


def print_answers(plan: dict[str, Any], missing: str) -> None:
    """The five questions' table of a report (``plan.json``) and where the page is."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(plan["title"]))
    for col in ("question", "answer", "how sure"):
        table.add_column(col)
    for a in plan["answers"]:
        answer = a["answer"] or {}
        text = escape(answer.get("text", missing))
        if answer.get("caution"):
            text += f" [yellow]({escape(answer['caution'])})[/yellow]"
        table.add_row(a["question"], text, escape(answer.get("uncertainty") or ""))
    console.print(table)
    for step in plan.get("steps", []):
        if "skipped" in step:
            console.print(f"{step['step']}: {step['skipped']}", markup=False)
    console.print(f"report: {plan['report']}", markup=False)
