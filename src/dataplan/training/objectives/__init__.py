"""The registry of training objectives: ``--objective NAME`` → an :class:`Objective` class.

Adding an objective is one module (a subclass of :class:`Objective`) and one line below; see
docs/extending.md. DPO and SimPO run through TRL's trainers (:mod:`.preference`).
"""

from __future__ import annotations

from typing import Any

from dataplan.errors import ConfigError
from dataplan.training.objectives.base import Objective
from dataplan.training.objectives.preference import DPO, SimPO
from dataplan.training.objectives.sft import SFT

OBJECTIVES: dict[str, type[Objective]] = {
    SFT.name: SFT,
    DPO.name: DPO,
    SimPO.name: SimPO,
}


def get_objective(name: str | Objective, **options: Any) -> Objective:
    """An objective instance by name (options go to its constructor), or ``name`` itself."""
    if isinstance(name, Objective):
        return name
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; choose from {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name](**options)


__all__ = ["OBJECTIVES", "Objective", "get_objective"]
