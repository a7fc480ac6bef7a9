"""``dataplan``: plan the data of a language-model fine-tune.

Every command prints a readable table, or with ``--json`` exactly one JSON object on stdout.
Errors in the user's input exit with code 2 and one line on stderr naming the file, line and
field; logging and progress bars go to stderr. One module per command group registers its
commands; their options come from the commands' config dataclasses (:mod:`dataplan.cli.build`).
Building the app imports no model code (torch, transformers), so ``dataplan --help`` is instant.
"""

from __future__ import annotations

import sys

import typer

from dataplan.cli import (
    curves,
    estimate,
    evaluate,
    plan,
    probe,
    report,
    scaling,
    select,
    tasks,
    train,
    weigh,
)
from dataplan.cli.output import err_console, fail
from dataplan.errors import DataplanError

app = typer.Typer(
    name="dataplan",
    help="How much data does a fine-tune need, which examples, how weighted, and how sure are we?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for group in (
    estimate,
    curves,
    select,
    weigh,
    train,
    evaluate,
    probe,
    scaling,
    plan,
    report,
    tasks,
):
    group.register(app)


def main() -> None:
    """Entry point: run the app, turning input errors into one line and exit code 2."""
    from dataplan.workflows import run_folder

    run_folder.INVOCATION = sys.argv[1:]  # recorded in run folders (command.txt)
    try:
        app()
    except DataplanError as err:
        fail(str(err), err.exit_code)
    except OSError as err:  # a file or folder the user named cannot be read or written
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        fail(f"{where}{err.strerror or err}", 2)
    except KeyboardInterrupt:
        err_console.print("interrupted; rerun with the same --run-dir to resume")
        sys.exit(130)
    finally:
        run_folder.INVOCATION = None
