"""``dataplan probe fit``: the probe maths on measurements made anywhere (docs/methods.md §8).

A probes file (CSV or Parquet) holds one row per probe measurement: ``c`` (the probe depth in
optimiser steps), ``seed`` and ``prediction`` (what the probe predicts, e.g. AUC'), optionally
``task``. Each (task, seed) is one probe run, so its depths must increase down the file. The fit,
c*, the regime and their seed-bootstrap intervals are :func:`dataplan.maths.probe.analyse`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dataplan.data.tables import TableSpec, read_table, row_lines
from dataplan.errors import ConfigError, InputError
from dataplan.maths.probe import FAST_ALPHA, NOISE_SD, ProbeFitError, RegimeThresholds, analyse
from dataplan.options import RunOptions, cli

PROBES = TableSpec(
    required=("c", "seed", "prediction"),
    text=("task",),
    positive=("c",),
    what="probes",
    item="probe row",
)


@dataclass(kw_only=True)
class ProbeFitConfig(RunOptions):
    """Settings of ``dataplan probe fit``.

    Attributes:
        probes: Probes file (CSV or Parquet): c (probe steps), seed, prediction[, task].
        price: The price of one probe step, in the prediction's variance (the paper's γλ): gives
            the budget-optimal depth c*.
        intrinsic: The intrinsic limit L_int (variance) if known, e.g. from a calibration: added
            to the measured seed variance; default: fitted as the plateau of the seed variance
            (needs 3 or more depths).
        noise_sd: Regime boundary: an irreducible standard deviation this large or larger is
            Noise-Dominant.
        fast_alpha: Regime boundary: a decay rate this fast or faster is Static-Sufficient.
        bootstrap: Seed-bootstrap resamples for the intervals.
        level: Coverage of the intervals.
        seed: Seed of the bootstrap.
        plot: Save a PNG of Û(c), the fit and c*.
    """

    probes: str = field(metadata=cli(argument=True))
    price: float | None = None
    intrinsic: float | None = None
    noise_sd: float = NOISE_SD
    fast_alpha: float = FAST_ALPHA
    bootstrap: int = 1000
    level: float = 0.8
    seed: int = field(default=0, metadata=cli(flag="--bootstrap-seed"))
    plot: str | None = None

    def __post_init__(self) -> None:
        if self.price is not None and not (math.isfinite(self.price) and self.price > 0):
            raise ConfigError(f"--price must be a positive number, got {self.price}")
        if self.intrinsic is not None and not (
            math.isfinite(self.intrinsic) and self.intrinsic >= 0
        ):
            raise ConfigError(f"--intrinsic must be a non-negative number, got {self.intrinsic}")
        if not (math.isfinite(self.noise_sd) and self.noise_sd > 0):
            raise ConfigError(f"--noise-sd must be positive, got {self.noise_sd}")
        if not math.isfinite(self.fast_alpha):
            raise ConfigError(f"--fast-alpha must be a number, got {self.fast_alpha}")
        if self.bootstrap < 0:
            raise ConfigError(f"--bootstrap must be non-negative, got {self.bootstrap}")
        if not 0 < self.level < 1:
            raise ConfigError(f"--level must be in (0, 1), got {self.level}")
        if self.plot is not None and Path(self.plot).suffix.lower() != ".png":
            raise ConfigError(f"--plot must end in .png, got {self.plot!r}")


def read_probes(path: str | Path) -> dict[str, Any]:
    """The probes file's columns, checked: finite c > 0, seed and prediction in every row, and
    each (task, seed)'s depths increasing down the file (one probe run records them in order).

    Raises:
        InputError: naming the file, line and column of the first bad value.
    """
    table = read_table(path, PROBES)
    n = len(table["c"])
    tasks = table.get("task", [""] * n)
    lines = _lines(path, n)
    last: dict[tuple[str, float], float] = {}
    for i in range(n):
        key = (str(tasks[i]), float(table["seed"][i]))
        c = float(table["c"][i])
        if key in last and not c > last[key]:
            where = f"task {key[0]!r} " if key[0] else ""
            raise InputError(
                f"{where}seed {_seed_text(key[1])}: depth {c:g} does not increase on {last[key]:g} (a probe "
                "run records its depths in increasing order)",
                path=path,
                line=lines[i],
                field="c",
            )
        last[key] = c
    return {
        "c": np.asarray(table["c"], dtype=np.float64),
        "seed": [_seed_text(s) for s in table["seed"]],
        "prediction": np.asarray(table["prediction"], dtype=np.float64),
        "task": None if "task" not in table else [str(t) for t in tasks],
    }


def _seed_text(seed: float) -> str:
    """A seed as text, exactly (``:g`` would make 1000000 and 1000001 both ``1e+06``)."""
    value = float(seed)
    return str(int(value)) if value.is_integer() else repr(value)


def _lines(path: str | Path, n: int) -> list[int | None]:
    """The line of each CSV row, or None (Parquet, or a file the two parsers count apart)."""
    if Path(path).suffix.lower() in (".parquet", ".pq"):
        return [None] * n
    found: list[int | None] = list(row_lines(Path(path), PROBES))
    return found if len(found) == n else [None] * n


def fit_probes(cfg: ProbeFitConfig) -> dict[str, Any]:
    """The analysis of ``cfg.probes`` as a JSON-ready dict (and the plot, if asked)."""
    data = read_probes(cfg.probes)
    try:
        result = analyse(
            data["c"],
            data["seed"],
            data["prediction"],
            data["task"],
            price=cfg.price,
            intrinsic=cfg.intrinsic,
            thresholds=RegimeThresholds(noise_sd=cfg.noise_sd, fast_alpha=cfg.fast_alpha),
            n_resamples=cfg.bootstrap,
            level=cfg.level,
            rng_seed=cfg.seed,
        )
    except ProbeFitError as err:
        raise InputError(str(err), path=cfg.probes) from None
    out = result.as_dict()
    out["probes"] = cfg.probes
    out["n_rows"] = len(data["c"])
    out["tasks"] = sorted(set(data["task"])) if data["task"] is not None else []
    out["settings"] = {
        "price": cfg.price,
        "intrinsic": cfg.intrinsic,
        "noise_sd": cfg.noise_sd,
        "fast_alpha": cfg.fast_alpha,
        "bootstrap": cfg.bootstrap,
        "level": cfg.level,
        "bootstrap_seed": cfg.seed,
    }
    out["notes"] = _notes(result, cfg)
    if cfg.plot is not None:
        from dataplan.plots import plot_probe_decay

        plot_probe_decay(result, Path(cfg.plot))
        out["plot"] = cfg.plot
    return out


def _notes(result: Any, cfg: ProbeFitConfig) -> list[str]:
    notes = []
    fit = result.fit
    if not fit.intrinsic_identifiable:
        notes.append("L_int is not identifiable from 2 depths: set to 0 (give --intrinsic)")
    if fit.alpha <= 0:
        notes.append(
            f"the seed variance does not decay with depth (alpha = {fit.alpha:.3g}): deeper "
            "probes do not narrow the forecast"
        )
    if cfg.price is None:
        notes.append("no --price: c* not computed")
    if result.n_bootstrap < 0.5 * result.n_resamples:
        notes.append(
            f"only {result.n_bootstrap} of {result.n_resamples} bootstrap resamples could be "
            "fitted (few seeds): the intervals are rough"
        )
    return notes
