"""``dataplan report``: one page from the run folders of any dataplan commands.

Each folder (or saved ``scaling fit`` / ``scaling plan`` JSON) becomes a section
(:mod:`dataplan.reporting.readers`); the five questions at the top take the answer of the most
direct evidence given (:data:`dataplan.reporting.page.PRIORITY`). The page is self-contained
HTML; ``plan.json`` beside it holds everything it shows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataplan.errors import ConfigError
from dataplan.options import RunOptions, cli


@dataclass(kw_only=True)
class ReportConfig(RunOptions):
    """Settings of ``dataplan report``.

    Attributes:
        run_dirs: Run folders of dataplan commands (estimate, probe, select, weigh, train,
            curve, calibrate) or saved scaling fit/plan JSON files.
        out: The HTML page to write.
        title: The page's title.
    """

    run_dirs: tuple[str, ...] = field(metadata=cli(argument=True, metavar="RUN_DIR"))
    out: str = "report.html"
    title: str = "dataplan report"

    def __post_init__(self) -> None:
        if not self.run_dirs:
            raise ConfigError("give at least one run folder")
        if Path(self.out).suffix.lower() not in (".html", ".htm"):
            raise ConfigError(f"--out must end in .html, got {self.out!r}")


def build_report(
    paths: Sequence[str | Path], out: str | Path, *, title: str = "dataplan report"
) -> dict[str, Any]:
    """Read ``paths``, write the page ``out`` and ``plan.json`` beside it; returns the plan."""
    from dataplan.io import atomic_path, write_json
    from dataplan.reporting.page import plan_json, render_html
    from dataplan.reporting.readers import read_run

    sections = [s for p in paths for s in read_run(p)]
    generated = time.strftime("%Y-%m-%d %H:%M %Z")
    html = render_html(sections, title=title, generated=generated)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(html, encoding="utf-8")
    plan = plan_json(sections, title=title, generated=generated)
    plan["report"] = str(out)
    write_json(out.with_name("plan.json"), plan)
    return plan


def report(cfg: ReportConfig) -> dict[str, Any]:
    """``dataplan report``: the page of ``cfg.run_dirs``."""
    return build_report(list(cfg.run_dirs), cfg.out, title=cfg.title)
