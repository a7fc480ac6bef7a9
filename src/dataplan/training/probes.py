"""Probes: short fine-tunes whose trajectory is measured at given depths (docs/methods.md §8).

A probe trains a fresh LoRA adapter on ``train`` examples for max(depths) optimiser steps through
the training core (:func:`dataplan.training.train`, so its schedule is that of a max(depths)-step
run) and, before the first step (depth 0) and after each depth c, measures in eval mode:

- ``train_loss``: the mean answer-token loss of the training examples,
- ``val_loss``: the same on the validation examples,
- ``val_accuracy``: option log-likelihood accuracy on the validation examples when every one has
  options (None otherwise: generation would cost more than the probe).

The trajectory features at c are those values and their drops from depth 0::

    train_loss_drop(c) = train_loss(0) − train_loss(c),   val_loss_drop(c) = val_loss(0) − val_loss(c)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, TrainerCallback

    from dataplan.data.formatting import PromptFormatter
    from dataplan.data.loading import Example
    from dataplan.training.settings import TrainSettings

FEATURES = ("train_loss_drop", "val_loss", "val_loss_drop", "val_accuracy")


@dataclass(frozen=True)
class ProbePoint:
    """What a probe measured at one depth (``train_loss`` etc. as in the module docstring)."""

    depth: int
    train_loss: float
    val_loss: float
    val_accuracy: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "val_accuracy": self.val_accuracy,
        }


@dataclass(frozen=True)
class ProbeTrajectory:
    """A probe's measurements at depth 0 and at each requested depth, in order."""

    points: tuple[ProbePoint, ...]
    seed: int

    def features(self, depth: int) -> dict[str, float | None]:
        """The trajectory features at ``depth`` (module docstring)."""
        start = self.points[0]
        at = next((p for p in self.points if p.depth == depth), None)
        if at is None:
            raise KeyError(f"the probe was not measured at depth {depth}")
        return {
            "train_loss_drop": start.train_loss - at.train_loss,
            "val_loss": at.val_loss,
            "val_loss_drop": start.val_loss - at.val_loss,
            "val_accuracy": at.val_accuracy,
        }

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "points": [p.as_dict() for p in self.points]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeTrajectory:
        return cls(
            points=tuple(
                ProbePoint(
                    depth=int(p["depth"]),
                    train_loss=float(p["train_loss"]),
                    val_loss=float(p["val_loss"]),
                    val_accuracy=None if p["val_accuracy"] is None else float(p["val_accuracy"]),
                )
                for p in d["points"]
            ),
            seed=int(d["seed"]),
        )


def measure_at(depths: Sequence[int], fn: Callable[[Any, int], None]) -> TrainerCallback:
    """A ``TrainerCallback`` calling ``fn(model, step)`` in eval mode before training (step 0,
    if 0 is in ``depths``) and after each optimiser step in ``depths``."""
    from transformers import TrainerCallback

    from dataplan.training.weights import score_in_eval_mode

    due = set(depths)

    class MeasureAt(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if 0 in due and state.global_step == 0:
                score_in_eval_mode(fn, kw["model"], 0)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step in due:
                score_in_eval_mode(fn, kw["model"], state.global_step)

    return MeasureAt()


def probe_trajectory(
    model: PreTrainedModel | PeftModel,
    train_examples: Sequence[Example],
    validation: Sequence[Example],
    formatter: PromptFormatter,
    depths: Sequence[int],
    *,
    seed: int,
    settings: TrainSettings | None = None,
) -> ProbeTrajectory:
    """Run one probe (module docstring); ``model`` is left without the probe's adapter.

    Args:
        depths: increasing positive optimiser-step counts.
        seed: the training seed (data order, adapter initialisation).
        settings: fine-tuning settings (default the curve settings); the number of steps is
            max(depths) whatever they say.

    Raises:
        ValueError: no depths, or depths not increasing and positive; no validation examples.
    """
    from dataplan.compute.example_stats import answer_losses
    from dataplan.compute.option_scoring import option_predictions
    from dataplan.data.formatting import encode_examples
    from dataplan.evaluation.metrics import exact_match_accuracy
    from dataplan.training import TrainSettings, train

    depths = [int(d) for d in depths]
    base = settings or TrainSettings()
    if base.method != "lora":
        raise ValueError("a probe trains a LoRA adapter (settings.method must be lora)")
    if not depths or any(d <= 0 for d in depths) or depths != sorted(set(depths)):
        raise ValueError(f"probe depths must be increasing positive integers, got {depths}")
    if not validation:
        raise ValueError("a probe needs validation examples")
    pad = formatter.tokenizer.pad_token_id
    encoded_train = encode_examples(formatter, train_examples)
    encoded_val = encode_examples(formatter, validation)
    with_options = all(e.choices for e in validation)
    points: list[ProbePoint] = []

    def measure(current: Any, step: int) -> None:
        accuracy = None
        if with_options:
            predicted = option_predictions(current, formatter, list(validation), pad)
            accuracy = exact_match_accuracy(predicted, [e.answer or "" for e in validation])
        points.append(
            ProbePoint(
                depth=step,
                train_loss=float(np.mean(answer_losses(current, encoded_train, pad))),
                val_loss=float(np.mean(answer_losses(current, encoded_val, pad))),
                val_accuracy=accuracy,
            )
        )

    from dataclasses import replace

    total = depths[-1]

    hyper = replace(base, min_steps=total, max_steps=total)
    result = train(
        model,
        train_examples,
        formatter,
        hyper,
        seed=seed,
        steps=total,
        callbacks=[measure_at([0, *depths], measure)],
    )
    from peft import PeftModel

    if isinstance(result.model, PeftModel):
        result.model.unload()
    return ProbeTrajectory(points=tuple(points), seed=seed)
