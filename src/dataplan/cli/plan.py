"""``dataplan plan``: the five answers for one model and task, in one folder and one page."""

from __future__ import annotations

import typer

from dataplan.cli.build import Output, config_command
from dataplan.cli.output import emit_json
from dataplan.cli.report import print_answers
from dataplan.workflows.plan import PlanConfig


def register(app: typer.Typer) -> None:
    @config_command(app, "plan", PlanConfig)
    def plan(cfg: PlanConfig, out: Output) -> None:
        """Estimate, select, weigh and plan the budget in one folder; write the report page."""
        from dataplan.workflows.plan import run_plan

        result = run_plan(cfg)
        if out.json:
            emit_json(result)
            return
        print_answers(result, "not answered (step skipped)")
