"""What a report holds (the five answers, one section per run) and its HTML page.

The page is one self-contained file: images inline as ``data:`` URIs, the style sheet inline, no
script and no network, so that it opens anywhere, offline, and prints. It is rendered with
Jinja2 (autoescaped: every string from a run folder is text, never markup).
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

QUESTIONS: dict[str, str] = {
    "data": "How much data does this task need?",
    "examples": "Which examples should we train on?",
    "weights": "How should we weight them?",
    "compute": "What does a compute budget buy?",
    "trust": "How far can we trust the forecast?",
}
"""The five questions, in the page's order (key → question)."""


@dataclass
class Answer:
    """One run's answer to one of the five questions.

    Attributes:
        text: the one-line answer.
        uncertainty: how sure (an interval, a spread, an error), when the run measures it.
        regime: the probe regime (Static-Sufficient, Dynamic-Critical, Noise-Dominant), if any.
        caution: what weakens the answer, shown beside it (e.g. a calibration whose slope is
            not positive).
    """

    text: str
    uncertainty: str | None = None
    regime: str | None = None
    caution: str | None = None


@dataclass
class Figure:
    """A PNG a run wrote (or the report drew from a run's data: ``png``), and what it shows."""

    caption: str
    path: Path
    png: bytes | None = field(default=None, repr=False)


@dataclass
class Section:
    """What one run folder says: its answers, key facts, plots, settings and cautions.

    Attributes:
        kind: the command that wrote the folder (estimate, probe, select, …).
        title: the section's heading.
        source: the run folder (or file) read.
        command: the command line that reproduces it (as far as the folder records it).
        answers: question key (:data:`QUESTIONS`) → this run's answer.
        facts: ``(label, value)`` rows of the section's table.
        figures: its plots.
        settings: the settings the run recorded.
        versions: package versions the run recorded.
        cautions: warnings the run recorded.
    """

    kind: str
    title: str
    source: Path
    command: str
    answers: dict[str, Answer] = field(default_factory=dict)
    facts: list[tuple[str, str]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    cautions: list[str] = field(default_factory=list)


# Which section answers a question first when several do (most direct evidence first).
PRIORITY: dict[str, tuple[str, ...]] = {
    "data": ("estimate", "curve", "probe"),
    "examples": ("select",),
    "weights": ("train", "weigh"),
    "compute": ("scaling plan", "scaling fit", "scaling runs"),
    "trust": ("probe", "estimate", "calibrate"),
}


@dataclass
class Headline:
    """The top of the page: a question, its answer and the section (run) that gave it."""

    key: str
    question: str
    answer: Answer | None
    section: Section | None
    anchor: str | None


def headlines(sections: list[Section]) -> list[Headline]:
    """The five questions, each with the answer of the section of highest :data:`PRIORITY`."""
    out = []
    for key, question in QUESTIONS.items():
        ranked = sorted(
            (i for i, s in enumerate(sections) if key in s.answers),
            key=lambda i: (_rank(key, sections[i].kind), i),
        )
        if ranked:
            i = ranked[0]
            out.append(Headline(key, question, sections[i].answers[key], sections[i], f"s{i}"))
        else:
            out.append(Headline(key, question, None, None, None))
    return out


def _rank(key: str, kind: str) -> int:
    order = PRIORITY.get(key, ())
    return order.index(kind) if kind in order else len(order)


def data_uri(figure: Figure) -> str:
    """A figure's PNG as a ``data:`` URI (the page carries its images)."""
    png = figure.png if figure.png is not None else figure.path.read_bytes()
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(sections: list[Section], *, title: str, generated: str) -> str:
    """The self-contained report page."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dataplan.reporting", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["data_uri"] = data_uri
    env.filters["pretty"] = _pretty
    template = env.get_template("report.html.j2")
    return template.render(
        title=title,
        generated=generated,
        headlines=headlines(sections),
        sections=list(enumerate(sections)),
        questions=QUESTIONS,
    )


def _pretty(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, sort_keys=True, default=str)


def plan_json(sections: list[Section], *, title: str, generated: str) -> dict[str, Any]:
    """Everything the page shows, machine-readable (figures as file paths)."""
    return {
        "title": title,
        "generated": generated,
        "answers": [
            {
                "key": h.key,
                "question": h.question,
                "answer": None if h.answer is None else asdict(h.answer),
                "from": None if h.section is None else str(h.section.source),
                "command": None if h.section is None else h.section.command,
            }
            for h in headlines(sections)
        ],
        "sections": [
            {
                **{k: v for k, v in asdict(s).items() if k not in ("figures", "source", "facts")},
                "source": str(s.source),
                "facts": [list(f) for f in s.facts],
                "figures": [
                    {"caption": f.caption, "path": str(f.path), "drawn": f.png is not None}
                    for f in s.figures
                ],
            }
            for s in sections
        ],
    }
