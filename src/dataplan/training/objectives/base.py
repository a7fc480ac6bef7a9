"""What a training objective is: the protocol every entry of the objectives registry follows.

An objective owns everything that depends on the kind of example and loss — how examples become
a dataset, how batches are collated, which ``transformers.Trainer`` (sub)class runs them and how
per-example weights enter its loss — and nothing else: the seed, the adapter, the optimiser
schedule, checkpoints, weight refreshes and the result are the training core's
(:func:`dataplan.training.train`), the same for every objective.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from dataplan.data.formatting import PromptFormatter
    from dataplan.training.weights import WeightTable


class Objective(ABC):
    """A training objective.

    Class attributes:
        name: its name in the registry (``--objective NAME``).
        example_kind: ``"labelled"`` (prompt, answer: :class:`dataplan.data.loading.Example`) or
            ``"preference"`` (prompt, chosen, rejected:
            :class:`dataplan.data.loading.PreferenceExample`).
    """

    name: ClassVar[str]
    example_kind: ClassVar[str]

    def settings(self) -> dict[str, Any]:
        """The objective's own options (recorded with results; empty for defaults)."""
        return {}

    @abstractmethod
    def build_trainer(
        self,
        model: torch.nn.Module,
        examples: Sequence[Any],
        formatter: PromptFormatter,
        args: TrainingArguments,
        weights: WeightTable | None,
        callbacks: Sequence[TrainerCallback],
    ) -> Trainer:
        """A trainer over ``examples`` whose loss weights example i by ``weights.current[i]``
        (the mean Σ wᵢℓᵢ / Σ wᵢ over each batch; None: unweighted, the objective's own loss)."""

    def finish(self, model: torch.nn.Module) -> None:
        """Called on the trained model when training ends (e.g. to drop helper adapters);
        nothing by default."""
        return None
