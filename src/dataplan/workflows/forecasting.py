"""Turning a task's features into a data-budget forecast: the options and the forecasters.

:class:`ForecastOptions` (calibration, target, interval) are shared by ``estimate`` and
``predict``, and :func:`resolve_target` is their one rule for the target: a normalised τ, or a raw
accuracy converted through zero-shot accuracy and ceiling, or — when neither is given — τ = 0.9
with a note. Forecasters come from a registry (:data:`FORECASTERS`): a forecaster maps named task
features to a :class:`~dataplan.maths.forecast.Forecast`. The CoS-Low calibration (AUC' =
c · CoS-Low + I, docs/methods.md §3) is the first; forecasters using short fine-tuning probes
come next.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dataplan.errors import ConfigError
from dataplan.maths.forecast import Calibration, Forecast, forecast, normalise_target
from dataplan.options import cli

DEFAULT_TARGET = 0.9


@dataclass(kw_only=True)
class ForecastOptions:
    """How a forecast is made.

    Attributes:
        calibration: Calibration name or JSON file (default: the model's, if built in).
        coef: Calibration slope c (with --intercept).
        intercept: Calibration intercept I (with --coef).
        n_max: Budget at which the predicted curve reaches the ceiling (default: the calibration's).
        target: Normalised target τ in (0, 1): share of the way from zero-shot to the ceiling.
        target_accuracy: Raw target accuracy, converted through zero-shot accuracy and ceiling.
        zero_shot_accuracy: Zero-shot accuracy (estimate: measured on a labelled pool by default).
        ceiling: Ceiling H (human-level score) for --target-accuracy.
        interval: Coverage of the reported intervals.
    """

    panel: ClassVar[str] = "Forecast"

    calibration: str | None = None
    coef: float | None = None
    intercept: float | None = None
    n_max: int | None = None
    target: float | None = None
    target_accuracy: float | None = None
    zero_shot_accuracy: float | None = None
    ceiling: float = 1.0
    interval: float = 0.8

    def check_forecast_options(self) -> None:
        """Raise ConfigError on an invalid or contradictory forecast option."""
        if self.target is not None and not 0.0 < self.target < 1.0:
            raise ConfigError(f"--target is a normalised target in (0, 1), got {self.target}")
        if self.target is not None and self.target_accuracy is not None:
            raise ConfigError("give --target or --target-accuracy, not both")
        if (self.coef is None) != (self.intercept is None):
            raise ConfigError(
                "give --calibration NAME|FILE or --coef C --intercept I "
                "(--coef and --intercept go together)"
            )
        if self.coef is not None and self.calibration is not None:
            raise ConfigError("give --calibration or --coef/--intercept, not both")
        if not 0.0 < self.interval < 1.0:
            raise ConfigError("--interval must be in (0, 1)")
        if self.n_max is not None and self.n_max < 2:
            raise ConfigError(f"--n-max must be at least 2, got {self.n_max}")
        for name in ("coef", "intercept", "ceiling", "target_accuracy", "zero_shot_accuracy"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite number")

    def resolve_calibration(self, model: str | None = None) -> Calibration | None:
        """--coef/--intercept, else --calibration, else the model's built-in one, else None."""
        from dataplan.calibrations import get_calibration, has_calibration

        if self.coef is not None and self.intercept is not None:
            return Calibration(
                name="custom", coef=self.coef, intercept=self.intercept, n_max=self.n_max or 5000
            )
        if self.calibration is not None:
            return get_calibration(self.calibration)
        if model is not None and has_calibration(model):
            return get_calibration(model)
        return None


def resolve_target(
    opts: ForecastOptions, zero_shot: float | None
) -> tuple[float | None, str | None, bool]:
    """The normalised target τ, a note for the user, and whether the note reports a problem.

    ``--target`` as given; ``--target-accuracy a`` as (a − acc₀)/(H − acc₀), which needs the
    zero-shot accuracy acc₀ and must land strictly inside (0, 1); neither: τ = 0.9, with a note.
    A problem leaves τ None (no forecast).
    """
    if opts.target is not None:
        return opts.target, None, False
    if opts.target_accuracy is None:
        return (
            DEFAULT_TARGET,
            f"no target given: forecast for the normalised target {DEFAULT_TARGET}",
            False,
        )
    zero = opts.zero_shot_accuracy if opts.zero_shot_accuracy is not None else zero_shot
    if zero is None:
        return None, "--target-accuracy needs --zero-shot-accuracy for an unlabelled pool", True
    tau = (
        normalise_target(opts.target_accuracy, zero, opts.ceiling)
        if opts.ceiling > zero
        else math.nan
    )
    if not 0.0 < tau < 1.0:
        return (
            None,
            f"target accuracy {opts.target_accuracy} is {tau:.3f} on the normalised scale "
            f"(zero-shot {zero:.3f}, ceiling {opts.ceiling}); it must lie strictly between 0 and 1",
            True,
        )
    return tau, None, False


class Forecaster(ABC):
    """Maps a task's features to a data-budget forecast.

    Class attributes:
        name: its registry name.
        features: the task features it reads (e.g. ``("cos_low",)``).
    """

    name: ClassVar[str]
    features: ClassVar[tuple[str, ...]]

    @abstractmethod
    def forecast(
        self, features: Mapping[str, float], target: float, *, n_max: int | None, level: float
    ) -> Forecast:
        """The forecast for normalised target τ = ``target`` with ``level`` intervals."""


class CosLowCalibration(Forecaster):
    """AUC' = c · CoS-Low + I, the curve f(x) = x^p and n* (docs/methods.md §3)."""

    name: ClassVar[str] = "coslow"
    features: ClassVar[tuple[str, ...]] = ("cos_low",)

    def __init__(self, calibration: Calibration):
        self.calibration = calibration

    def forecast(
        self, features: Mapping[str, float], target: float, *, n_max: int | None, level: float
    ) -> Forecast:
        return forecast(features["cos_low"], self.calibration, target, n_max=n_max, level=level)


FORECASTERS: dict[str, type[Forecaster]] = {
    CosLowCalibration.name: CosLowCalibration,
}


def get_forecaster(name: str, **options: Any) -> Forecaster:
    """A forecaster by name (options go to its constructor)."""
    if name not in FORECASTERS:
        raise ConfigError(f"unknown forecaster {name!r}; choose from {', '.join(FORECASTERS)}")
    return FORECASTERS[name](**options)


@dataclass(kw_only=True)
class PredictConfig(ForecastOptions):
    """Settings of ``dataplan predict``: a forecast from a CoS-Low value and a calibration.

    Attributes:
        cos_low: The task's CoS-Low.
    """

    cos_low: float = field(metadata=cli(flag="--cos-low"))

    def __post_init__(self) -> None:
        if not math.isfinite(self.cos_low):
            raise ConfigError("--cos-low must be a finite number")
        self.check_forecast_options()
        if self.calibration is None and self.coef is None:
            raise ConfigError("give --calibration NAME|FILE or --coef C --intercept I")


def predict(cfg: PredictConfig) -> tuple[Forecast, str | None]:
    """The forecast for ``cfg.cos_low`` and a note (e.g. the default target), by the same target
    rule as ``estimate`` (:func:`resolve_target`); an impossible target is a ConfigError."""
    calibration = cfg.resolve_calibration()
    assert calibration is not None  # checked by the config
    tau, note, problem = resolve_target(cfg, None)
    if problem or tau is None:
        raise ConfigError(note or "no target")
    fc = CosLowCalibration(calibration).forecast(
        {"cos_low": cfg.cos_low}, tau, n_max=cfg.n_max, level=cfg.interval
    )
    return fc, note
