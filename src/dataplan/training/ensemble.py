"""An ensemble of LoRA adapters trained on one pool, with checkpoints saved along the way.

GRADFILTERING (arXiv 2601.13697) trains M LoRA adapters on the candidate pool with the frozen
proxy, each with its own seed and data order, and reads per-example gradients at an early and a
late point of that training. Member m trains with seed ``seed + m`` (data order and dropout); its
adapter initialisation uses the same seed, or ``seed`` for every member with ``shared_init``
(needed when gradients of different members are added, as in the classic SNR: the members must
share one coordinate system).

Training goes through the training core (:func:`dataplan.training.train`), which saves the
adapter (peft ``save_pretrained``: safetensors + config) at the checkpoint steps. A member whose
checkpoints are all on disk is not trained again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from dataplan.data.formatting import PromptFormatter
from dataplan.data.loading import Example
from dataplan.errors import ConfigError
from dataplan.training.checkpoints import adapter_complete

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class EnsembleSettings:
    """How the proxy's LoRA ensemble is trained.

    Attributes:
        members: M.
        rank, alpha: LoRA rank and alpha (all linear layers).
        learning_rate, batch_size, epochs: training; steps = ceil(epochs · N / batch_size).
        checkpoints: fractions of the steps at which adapters are saved (0 = the fresh adapter).
        shared_init: every member starts from the same adapter initialisation.
        seed: member m uses ``seed + m``.
    """

    members: int = 3
    rank: int = 8
    alpha: float = 16.0
    learning_rate: float = 5e-4
    batch_size: int = 8
    epochs: float = 1.0
    checkpoints: tuple[float, ...] = (0.25, 1.0)
    shared_init: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ConfigError("the ensemble needs at least one member")
        if self.rank < 1 or self.batch_size < 1 or self.epochs <= 0 or self.learning_rate <= 0:
            raise ConfigError("rank, batch size, epochs and learning rate must be positive")
        cps = self.checkpoints
        if not cps or any(not 0.0 <= c <= 1.0 for c in cps) or list(cps) != sorted(set(cps)):
            raise ConfigError(
                f"checkpoints must be increasing fractions of training in [0, 1], got {list(cps)}"
            )

    def steps(self, n: int, world_size: int = 1) -> int:
        """Optimiser steps for ``epochs`` passes over n examples with the global batch
        (per-process batch × processes under ``torchrun``)."""
        return max(1, math.ceil(self.epochs * n / (min(self.batch_size, n) * world_size)))

    def checkpoint_steps(self, n: int, world_size: int = 1) -> list[int]:
        """The steps where adapters are saved; a fraction > 0 is at least step 1.

        Raises:
            ConfigError: if two checkpoints fall on the same step (too few steps to tell an
                early from a late point: more examples or epochs, or other --checkpoints).
        """
        total = self.steps(n, world_size)
        steps = [0 if c == 0 else max(1, round(c * total)) for c in self.checkpoints]
        if len(set(steps)) < len(steps):
            raise ConfigError(
                f"checkpoints {list(self.checkpoints)} of {total} training steps fall on steps "
                f"{steps}: give more examples or --epochs, or checkpoints further apart"
            )
        return steps

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checkpoints"] = list(self.checkpoints)
        return d


def adapter_name(member: int, checkpoint: int) -> str:
    return f"m{member}-c{checkpoint}"


def train_ensemble(
    model: PreTrainedModel,
    examples: Sequence[Example],
    formatter: PromptFormatter,
    settings: EnsembleSettings,
    out_dir: str | Path,
    *,
    progress: bool = True,
) -> list[list[Path]]:
    """Train (or resume) the ensemble; returns ``dirs[m][c]``, the saved adapter folders.

    ``model`` is the frozen proxy; each member's adapter is removed from it after training.
    A member whose checkpoints are all saved is not trained again.
    """
    from tqdm.auto import tqdm

    from dataplan.compute.distributed import barrier, world
    from dataplan.training import TrainSettings, train

    out = Path(out_dir)
    _, world_size = world()
    steps = settings.steps(len(examples), world_size)
    cp_steps = settings.checkpoint_steps(len(examples), world_size)
    hyper = TrainSettings(
        learning_rate=settings.learning_rate,
        batch_size=settings.batch_size,
        epochs=settings.epochs,
        min_steps=steps,
        max_steps=steps,
        lora_r=settings.rank,
        lora_alpha=settings.alpha,
    )
    dirs = [[out / f"member-{m}" / f"step-{s}" for s in cp_steps] for m in range(settings.members)]
    for m in tqdm(range(settings.members), desc="ensemble", disable=not progress):
        if all(adapter_complete(d) for d in dirs[m]):
            continue
        seed = settings.seed + m
        result = train(
            model,
            examples,
            formatter,
            hyper,
            seed=seed,
            init_seed=settings.seed if settings.shared_init else seed,
            steps=steps,
            checkpoints=dict(zip(cp_steps, dirs[m], strict=True)),
        )
        cast("PeftModel", result.model).unload()  # the proxy again, without the adapter
        barrier()
        missing = [d for d in dirs[m] if not adapter_complete(d)]
        if missing:
            raise RuntimeError(f"ensemble member {m}: checkpoint {missing[0]} was not saved")
    return dirs


def load_ensemble(model: torch.nn.Module, dirs: Sequence[Sequence[Path]]) -> PeftModel:
    """A peft model holding every saved adapter, named ``m<member>-c<checkpoint>``."""
    from peft import PeftModel

    peft_model = None
    for m, member in enumerate(dirs):
        for c, path in enumerate(member):
            name = adapter_name(m, c)
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
            else:
                peft_model.load_adapter(str(path), adapter_name=name)
    if peft_model is None:
        raise ValueError("no adapters to load")
    peft_model.eval()
    return peft_model


__all__ = [
    "EnsembleSettings",
    "adapter_name",
    "load_ensemble",
    "train_ensemble",
]
