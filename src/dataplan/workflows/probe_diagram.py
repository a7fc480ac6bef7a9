"""``dataplan probe diagram``: the calibration tasks on the phase diagram (docs/methods.md §8).

Reads the probe section of a calibration study (``study.json`` of ``calibrate --probe-steps``):
each task's intrinsic limit L_int and decay rate α
(:func:`dataplan.maths.probe_calibration.task_decompositions`), classifies it with the given
thresholds and draws the (√L_int, α) plane with the regime boundaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataplan.errors import ConfigError, InputError
from dataplan.maths.probe import FAST_ALPHA, NOISE_SD, REGIMES, RegimeThresholds, regime
from dataplan.options import RunOptions, cli


@dataclass(kw_only=True)
class ProbeDiagramConfig(RunOptions):
    """Settings of ``dataplan probe diagram``.

    Attributes:
        study: A calibration study folder (`calibrate --probe-steps --out-dir DIR`).
        noise_sd: Regime boundary: an irreducible standard deviation of AUC' this large or
            larger is Noise-Dominant.
        fast_alpha: Regime boundary: a decay rate this fast or faster is Static-Sufficient.
        out: The diagram's PNG (default: phase-diagram.png in the study folder).
    """

    study: str = field(metadata=cli(flag="--study"))
    noise_sd: float = NOISE_SD
    fast_alpha: float = FAST_ALPHA
    out: str | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_sd) and self.noise_sd > 0):
            raise ConfigError(f"--noise-sd must be positive, got {self.noise_sd}")
        if not math.isfinite(self.fast_alpha):
            raise ConfigError(f"--fast-alpha must be a number, got {self.fast_alpha}")
        if self.out is not None and Path(self.out).suffix.lower() != ".png":
            raise ConfigError(f"--out must end in .png, got {self.out!r}")


def phase_diagram(cfg: ProbeDiagramConfig) -> dict[str, Any]:
    """Every task's point and regime under ``cfg``'s thresholds, and the PNG."""
    from dataplan.parsing import decode_json, read_utf8
    from dataplan.plots import plot_phase_diagram

    path = Path(cfg.study) / "study.json"
    if not path.is_file():
        raise InputError("no study.json: not a calibration study folder", path=cfg.study)
    try:
        study = decode_json(read_utf8(path))
    except ValueError as err:
        raise InputError(f"not a calibration study ({err})", path=path) from None
    probe = study.get("probe") if isinstance(study, dict) else None
    if not isinstance(probe, dict) or "tasks" not in probe:
        raise InputError(
            "no probe calibration in this study: run `calibrate --probe-steps …`", path=path
        )
    if not isinstance(probe["tasks"], list):
        raise InputError("expected a list of task points", path=path, field="probe.tasks")
    thresholds = RegimeThresholds(noise_sd=cfg.noise_sd, fast_alpha=cfg.fast_alpha)
    tasks = []
    for i, t in enumerate(probe["tasks"]):
        try:
            point = dict(t)
            if t.get("alpha") is not None:
                point["regime"] = regime(
                    float(t["intrinsic"]), float(t["alpha"]), float(t["seed_variance"][0]),
                    thresholds,
                )  # fmt: skip
        except (KeyError, TypeError, IndexError, ValueError) as err:  # a damaged file
            raise InputError(
                f"not a probe task point ({type(err).__name__}: {err})",
                path=path,
                field=f"probe.tasks[{i}]",
            ) from None
        tasks.append(point)
    out = Path(cfg.out) if cfg.out else Path(cfg.study) / "phase-diagram.png"
    plot_phase_diagram(out, tasks, thresholds, title=f"{study.get('name', '')}: probe regimes")
    counts = {r: sum(1 for t in tasks if t.get("regime") == r) for r in REGIMES}
    counts["undetermined"] = sum(1 for t in tasks if t.get("regime") is None)
    return {
        "study": cfg.study,
        "thresholds": {"noise_sd": cfg.noise_sd, "fast_alpha": cfg.fast_alpha},
        "tasks": tasks,
        "counts": counts,
        "plot": str(out),
    }
