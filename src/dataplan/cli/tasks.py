"""``dataplan tasks list|export``: the built-in task suite."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dataplan.cli.build import JsonOpt
from dataplan.cli.output import console, emit_json, setup_logging


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="The built-in task suite (BIG-bench and reasoning-gym).", no_args_is_help=True
    )
    app.add_typer(group, name="tasks")

    @group.command("list")
    def tasks_list(json_out: JsonOpt = False) -> None:
        """List the suite's tasks with their kind, metric and split sizes."""
        from dataplan.tasks.registry import TASKS

        specs = [t.to_dict() for t in TASKS.values()]
        if json_out:
            emit_json({"tasks": specs})
            return
        from rich.table import Table

        table = Table(title=f"dataplan task suite ({len(specs)} tasks)", box=None, pad_edge=False)
        table.add_column("name", no_wrap=True)  # names are what users type: never cut them
        table.add_column("kind", no_wrap=True)
        table.add_column("metric", no_wrap=True)
        table.add_column("test/pool≤", justify="right", no_wrap=True)
        table.add_column("from", no_wrap=True)
        short = {"exact_match": "EM", "token_f1": "F1"}
        table.caption = "from: BIG-bench (* = a task of the CoS-Low paper) or reasoning-gym (RG)"
        for t in specs:
            table.add_row(
                t["name"],
                t["kind"].replace("_", " "),
                short.get(t["metric"], t["metric"]),
                f"{t['test_size']}/{t['pool_size']}",
                ("BB*" if t["in_paper"] else "BB") if t["source"] == "bigbench" else "RG",
            )
        console.print(table)

    @group.command("export")
    def tasks_export(
        name: Annotated[str, typer.Argument(help="Task name (see `dataplan tasks list`).")],
        out: Annotated[Path, typer.Option(help="Output file: .jsonl, .csv or .parquet.")],
        split: Annotated[str, typer.Option(help="pool (training), test or all.")] = "pool",
        json_out: JsonOpt = False,
    ) -> None:
        """Write a task's examples (id, prompt, answer, choices) to a file."""
        setup_logging(json_out)
        from dataplan.tasks.registry import get_task, load_task
        from dataplan.workflows.export import check_export_path, export_examples

        check_export_path(out)  # before a task's first use downloads its source
        spec = get_task(name)
        examples = load_task(name, split)
        export_examples(examples, out)
        summary = {"task": spec.name, "split": split, "examples": len(examples), "out": str(out)}
        if json_out:
            emit_json(summary)
        else:
            console.print(
                f"wrote {len(examples)} {split} examples of {spec.name} to {out}", markup=False
            )
