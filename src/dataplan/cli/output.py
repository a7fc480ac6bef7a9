"""Output for people (rich tables on stdout) and machines (one JSON object on stdout)."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dataplan.reporting.folder_facts import track_record_text

console = Console()
err_console = Console(stderr=True)


def output_rank() -> bool:
    """Whether this process prints: under ``torchrun`` only rank 0 does (every rank computes),
    so that ``--json`` gives exactly one object."""
    return int(os.environ.get("RANK", "0")) == 0


def emit_json(obj: Any) -> None:
    from dataplan.io import to_json

    if not output_rank():
        return
    sys.stdout.write(to_json(obj) + "\n")
    sys.stdout.flush()


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_n(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def key_value_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for k, v in rows:  # keys may carry markup; values are data (paths, messages): escaped
        table.add_row(k, escape(str(v)))
    return table


def forecast_rows(fc: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        ("calibration", fc["calibration"]),
        ("predicted AUC'", fmt(fc["auc"], 3) + _iv(fc.get("auc_interval"), fc, 3)),
        ("normalised target τ", fmt(fc["target"], 3)),
        ("examples needed n*", fmt_n(fc["n_star"]) + _iv_n(fc.get("n_star_interval"), fc)),
    ]
    curve = ", ".join(f"{n}:{v:.2f}" for n, v in zip(fc["curve_n"], fc["curve"], strict=True))
    rows.append(("predicted curve (n:f)", curve))
    if (track := track_record_text(fc)) is not None:
        rows.append(("calibration's track record", track))
    if fc.get("warning"):
        rows.append(("[yellow]caution[/yellow]", fc["warning"]))
    return rows


def _iv(iv: Sequence[float] | None, fc: dict[str, Any], digits: int) -> str:
    if not iv:
        return ""
    return f"  [{fmt(iv[0], digits)}, {fmt(iv[1], digits)}] ({fc['interval_level']:.0%})"


def _iv_n(iv: Sequence[float] | None, fc: dict[str, Any]) -> str:
    if not iv:
        return ""
    return f"  [{fmt_n(iv[0])}, {fmt_n(iv[1])}] ({fc['interval_level']:.0%})"


def setup_logging(quiet: bool) -> None:
    """Log lines (and progress bars) on stderr, unless quiet; libraries' chatter silenced."""
    import logging
    import warnings

    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
        force=True,
    )
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


def note(text: str) -> None:
    """A note for the reader, after a table."""
    console.print(f"[yellow]note:[/yellow] {escape(text)}")


def fail(message: str, code: int) -> None:
    """One line on stderr, then exit with ``code``."""
    err_console.print(
        f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True
    )
    sys.exit(code)
