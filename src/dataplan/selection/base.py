"""The protocol of a ``dataplan select`` method: what it needs, what it reads, how it scores.

A method declares what the shared passes of :mod:`dataplan.workflows.select_scoring` must compute
for it, and turns their cached results into one score per pool example (higher = kept first):

- no model (``needs_model = False``): :meth:`SelectionMethod.score` sees only the pool;
- proxy losses (``proxy_losses``): the frozen proxy's mean answer-token losses, ``"loss"``
  (given the prompt) and ``"loss_unconditioned"`` (given the empty prompt's template);
- ensemble gradient statistics (``needs_ensemble``): the LoRA ensemble of docs/methods.md §5.1 is
  trained once per settings, then per-example squared gradient norms of every adapter that
  :meth:`SelectionMethod.adapters` names, inner products with the target set's mean gradient
  (``needs_target``) and the squared norms of the members' summed gradients
  (:meth:`SelectionMethod.sum_groups`), cached per adapter so methods share passes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from dataplan.data.loading import Example

if TYPE_CHECKING:
    from dataplan.workflows.select import SelectConfig


@dataclass(frozen=True)
class EnsembleLayout:
    """The ensemble's adapters: ``members`` × ``n_checkpoints``, the first checkpoint *early*,
    the last *late*."""

    members: int
    n_checkpoints: int

    @staticmethod
    def adapter(member: int, checkpoint: int) -> str:
        """The name of member ``member``'s adapter at checkpoint ``checkpoint``."""
        return f"m{member}-c{checkpoint}"  # = dataplan.training.ensemble.adapter_name

    @property
    def early(self) -> list[str]:
        return [self.adapter(m, 0) for m in range(self.members)]

    @property
    def late(self) -> list[str]:
        return [self.adapter(m, self.n_checkpoints - 1) for m in range(self.members)]

    @property
    def every(self) -> list[str]:
        """Every member's every checkpoint, member by member."""
        return [self.adapter(m, c) for m in range(self.members) for c in range(self.n_checkpoints)]


@dataclass
class PoolStatistics:
    """What the shared passes computed over the whole pool, for :meth:`SelectionMethod.score`.

    Attributes:
        pool: the pool's examples.
        columns: proxy losses (``loss``, ``loss_unconditioned``), or the ensemble's shared
            columns (``grad_norm_late``: mean over members of the late norm; ``grad_spread_late``:
            their std over that mean, M ≥ 2), each shape (N,); written to the scores file.
        layout: the ensemble's adapters (ensemble methods).
        adapters: the adapters read, in :meth:`SelectionMethod.adapters` order: the rows of
            ``sq_norms``, ``inner`` and ``target_norm``.
        sq_norms: ‖g_i^a‖², shape (A, N).
        inner: ⟨g_i^a, ḡ_T^a⟩ with the target set's mean gradient, shape (A, N).
        target_norm: ‖ḡ_T^a‖, shape (A, 1).
        sq_norm_of_sum: per group of :meth:`SelectionMethod.sum_groups`, ‖Σ_a g_i^a‖², (N,).
    """

    pool: list[Example]
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    layout: EnsembleLayout | None = None
    adapters: list[str] = field(default_factory=list)
    sq_norms: np.ndarray | None = None
    inner: np.ndarray | None = None
    target_norm: np.ndarray | None = None
    sq_norm_of_sum: dict[str, np.ndarray] = field(default_factory=dict)

    def rows(self, adapters: list[str]) -> list[int]:
        """The rows of ``adapters`` in the (A, N) arrays."""
        return [self.adapters.index(a) for a in adapters]

    def norms(self, adapters: list[str] | None = None) -> np.ndarray:
        """‖g_i^a‖ of ``adapters`` (default: every adapter read), shape (A, N)."""
        assert self.sq_norms is not None, "no gradient statistics were computed"
        norms = np.sqrt(np.clip(self.sq_norms, 0.0, None))
        return norms if adapters is None else norms[self.rows(adapters)]


Scored = tuple[np.ndarray, dict[str, np.ndarray], list[str]]
"""``(scores (N,), extra columns for the scores file, notes)``."""


class SelectionMethod(ABC):
    """A selection method; subclasses set the class attributes and implement :meth:`score`.

    Adding a method: one module under :mod:`dataplan.selection` with a subclass, one line in
    :data:`dataplan.selection.METHODS`, and its tests.
    """

    name: ClassVar[str]
    needs_model: ClassVar[bool] = True
    """False: scored from the pool alone (no model, no run folder)."""
    needs_target: ClassVar[bool] = False
    """True: ``--target FILE`` is required (its examples are loaded with the pool)."""
    needs_ensemble: ClassVar[bool] = False
    """True: reads the ensemble's gradient statistics (see :meth:`adapters`)."""
    proxy_losses: ClassVar[tuple[str, ...]] = ()
    """The frozen proxy's losses it reads: ``"loss"`` and/or ``"loss_unconditioned"``."""
    default_members: ClassVar[int] = 1
    """``--members`` when not given."""

    def validate(self, cfg: SelectConfig) -> None:
        """Refuse this method's invalid options (raise :class:`~dataplan.errors.ConfigError`);
        called once ``cfg.members`` holds its default."""
        return None

    def settings(self, cfg: SelectConfig) -> dict[str, Any]:
        """This method's own settings, recorded with its results (beyond seed, ensemble, target
        and balancing, which :meth:`SelectConfig.method_settings` records for every method)."""
        return {}

    def shared_init(self, cfg: SelectConfig) -> bool:
        """Whether the ensemble's members share one adapter initialisation."""
        return False

    def adapters(self, cfg: SelectConfig, layout: EnsembleLayout) -> list[str]:
        """The adapters whose per-example statistics it reads (ensemble methods)."""
        return []

    def sum_groups(self, cfg: SelectConfig, layout: EnsembleLayout) -> dict[str, list[str]]:
        """Groups of adapters (among :meth:`adapters`) whose summed gradient's norm it reads."""
        return {}

    @abstractmethod
    def score(self, cfg: SelectConfig, stats: PoolStatistics) -> Scored:
        """The scores of the pool from the statistics it declared."""

    def demote(self, scores: np.ndarray) -> tuple[np.ndarray, str] | None:
        """Examples ranked after all others when ranking highest first, and a note on them.

        The demoted ones come in reverse score order (the lowest, nearest the kept ones, first).
        None: no example is demoted.
        """
        return None


__all__ = ["EnsembleLayout", "PoolStatistics", "Scored", "SelectionMethod"]
