"""What every report reader reads alike from a run folder: its JSON files, numbers and
intervals as text, the command that made it, its versions and its figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dataplan.errors import InputError
from dataplan.reporting.page import Figure, Section
from dataplan.workflows.run_folder import COMMAND_FILE


def read_json(path: Path) -> Any:
    from dataplan.parsing import decode_json, read_utf8

    try:
        return decode_json(read_utf8(path))
    except ValueError as err:
        raise InputError(f"not valid JSON ({err})", path=path) from None


def number_text(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def interval_text(pair: Any, digits: int = 3, level: Any = None) -> str | None:
    if not isinstance(pair, (list, tuple)) or len(pair) != 2 or None in pair:
        return None
    text = f"[{number_text(pair[0], digits)}, {number_text(pair[1], digits)}]"
    if isinstance(level, (int, float)):
        text += f" ({level:.0%} interval)"
    return text


def track_record_text(forecast: dict[str, Any]) -> str | None:
    """How far a forecast's calibration missed tasks it was not fitted on (its leave-one-task-out
    mean absolute AUC' error), from the forecast's dict; None when the calibration lacks it."""
    mae = forecast.get("calibration_loo_mae")
    if mae is None:
        return None
    tasks = (
        f" over {forecast['calibration_tasks']} tasks" if forecast.get("calibration_tasks") else ""
    )
    return f"leave-one-task-out AUC′ error {number_text(mae)} on average{tasks}"


def command_of(folder: Path, fallback: str) -> str:
    recorded = folder / COMMAND_FILE if folder.is_dir() else None
    if recorded is not None and recorded.exists():
        return recorded.read_text(encoding="utf-8").strip()
    return fallback


def versions_of(folder: Path) -> dict[str, Any]:
    path = folder / "versions.json"
    return read_json(path) if path.exists() else {}


def run_folder_section(folder: Path, kind: str, title: str, command: str) -> Section:
    """The section of a run folder: its settings (config.json), versions and command line
    (``command`` when the folder does not record one)."""
    return Section(
        kind=kind,
        title=title,
        source=folder,
        command=command_of(folder, command),
        settings=read_json(folder / "config.json"),
        versions=versions_of(folder),
    )


def sibling_png(path: Path, caption: str) -> list[Figure]:
    """The plot saved beside a JSON result under the same name (``fit.json`` → ``fit.png``)."""
    png = path.with_suffix(".png")
    return [Figure(caption, png)] if png.exists() else []


def named_figures(folder: Path, *named: tuple[str, str]) -> list[Figure]:
    return [Figure(caption, folder / name) for name, caption in named if (folder / name).exists()]
