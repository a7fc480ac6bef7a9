"""Per-example training weights: the table the loss reads, and its refresh during training.

A :class:`WeightTable` holds one weight per training example; the objective's loss looks up the
current batch's weights by example index (:meth:`WeightTable.for_batch`). A :class:`Refresh`
replaces them every ``every`` optimiser steps with what its function computes from the current
model (e.g. ICA scores from the current parameters); the table keeps every version it held.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dataplan.errors import ConfigError

if TYPE_CHECKING:
    from transformers import TrainerCallback

WeightFunction = Callable[[torch.nn.Module, int], Any]
"""``fn(model, step) -> (N,) weights``: the model as trained so far, the optimiser step."""


def check_weights(weights: Any, n: int, what: str = "weights") -> np.ndarray:
    """``weights`` as a float64 (n,) array; raises ConfigError unless finite, ≥ 0, not all 0."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ConfigError(f"{what}: expected one weight per example ({n}), got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ConfigError(f"{what}: weights must be finite and non-negative")
    if not (w > 0).any():
        raise ConfigError(f"{what}: every weight is 0, nothing would be trained")
    return w


@dataclass(frozen=True)
class Refresh:
    """Recompute the weights every ``every`` optimiser steps (not after the last step).

    Attributes:
        fn: the :data:`WeightFunction`.
        every: steps between refreshes (≥ 1).
    """

    fn: WeightFunction
    every: int

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ConfigError(f"weights are refreshed every >= 1 steps, got {self.every}")

    def steps(self, total: int) -> list[int]:
        """The optimiser steps after which the weights are recomputed."""
        return list(range(self.every, total, self.every))


@dataclass
class WeightTable:
    """The current per-example weights, (N,), and every version with the step it took effect.

    With ``per_batch_floor`` set, the weights a batch receives are min-max normalised again
    within the batch (the ICA paper's normalisation), floored at ``per_batch_floor``; min-max is
    invariant to increasing affine maps, so pool-normalised weights give the same batch weights
    as the raw scores would. A batch whose weights are all equal gets weight 1 throughout.
    """

    current: np.ndarray
    history: list[tuple[int, np.ndarray]] = field(default_factory=list)
    per_batch_floor: float | None = None

    def __post_init__(self) -> None:
        self.current = check_weights(self.current, len(self.current))
        self._tensor = torch.from_numpy(self.current.copy())
        if not self.history:
            self.history.append((0, self.current.copy()))

    def for_batch(self, index: torch.Tensor) -> torch.Tensor:
        """(B,) the weights of the batch's examples (float64, on the CPU)."""
        w = self._tensor[index.cpu()]
        if self.per_batch_floor is None:
            return w
        from dataplan.maths.weights import minmax_weights

        return torch.from_numpy(minmax_weights(w.numpy(), self.per_batch_floor))

    def update(self, weights: Any, step: int) -> None:
        self.current = check_weights(
            weights, len(self.current), f"weights refreshed at step {step}"
        )
        self._tensor = torch.from_numpy(self.current.copy())
        self.history.append((step, self.current.copy()))


def score_in_eval_mode(fn: WeightFunction, model: torch.nn.Module, step: int) -> Any:
    """``fn(model, step)`` with the model in eval mode (no dropout), its mode restored after."""
    was_training = model.training
    model.eval()
    try:
        return fn(model, step)
    finally:
        model.train(was_training)


def refresh_callback(table: WeightTable, refresh: Refresh, total_steps: int) -> TrainerCallback:
    """A ``TrainerCallback`` that refreshes ``table`` at ``refresh.steps(total_steps)`` (in eval
    mode: :func:`dataplan.training.probes.measure_at`, the probes' callback)."""
    from dataplan.training.probes import measure_at

    return measure_at(
        refresh.steps(total_steps),
        lambda model, step: table.update(refresh.fn(model, step), step),
    )
