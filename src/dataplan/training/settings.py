"""Fine-tuning hyper-parameters shared by every fine-tune in dataplan.

Steps [our choice]: ``max(min_steps, ceil(epochs · n / batch_size))``, capped at ``max_steps``,
so that tiny budgets still train a little and large ones see each example ``epochs`` times.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from dataplan.errors import ConfigError
from dataplan.models.lora import LoraSettings


@dataclass(frozen=True)
class TrainSettings:
    """Fine-tuning hyper-parameters (recorded with every cached result).

    Attributes:
        method: lora (a fresh adapter on the frozen model) or full fine-tuning.
        learning_rate: Peak learning rate (linear decay after the warm-up).
        batch_size: Training examples per optimiser step (and process).
        epochs: Passes over the training set (steps = max(min, ceil(epochs · n / batch)), capped).
        min_steps: Fewest optimiser steps of any fine-tune.
        max_steps: Most optimiser steps of any fine-tune.
        warmup_ratio: Share of the steps spent warming the learning rate up.
        weight_decay: AdamW weight decay.
        lora_r: LoRA rank of the trained adapter.
        lora_alpha: LoRA alpha of the trained adapter.
        lora_targets: 'all-linear' or comma-separated module names.
    """

    panel: ClassVar[str] = "Training"

    method: str = "lora"  # "lora" or "full"
    learning_rate: float = 5e-4
    batch_size: int = 8
    epochs: float = 3.0
    min_steps: int = 20
    max_steps: int = 300
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_targets: str = "all-linear"

    def __post_init__(self) -> None:
        if self.method not in ("lora", "full"):
            raise ConfigError(f"training method must be lora or full, got {self.method!r}")
        if not (
            math.isfinite(self.learning_rate) and self.learning_rate > 0 and self.batch_size >= 1
        ) or not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ConfigError("learning rate, batch size and epochs must be positive and finite")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(
                f"--weight-decay must be a non-negative number, got {self.weight_decay}"
            )
        if not 1 <= self.min_steps <= self.max_steps:
            raise ConfigError("need 1 <= min_steps <= max_steps")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warm-up ratio must be in [0, 1), got {self.warmup_ratio}")
        self.lora(0)  # validates the adapter settings

    def steps_for(self, n: int, world_size: int = 1) -> int:
        """Optimiser steps for a training set of ``n`` examples, ``world_size`` data-parallel
        processes each taking ``batch_size`` per step (the effective batch: their product)."""
        effective = self.batch_size * world_size
        return min(self.max_steps, max(self.min_steps, math.ceil(self.epochs * n / effective)))

    def lora(self, seed: int) -> LoraSettings:
        """The adapter these settings attach, its random A drawn from ``seed``."""
        return LoraSettings.from_options(self.lora_r, self.lora_alpha, self.lora_targets, seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
