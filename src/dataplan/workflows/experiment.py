"""One fine-tune-and-evaluate experiment, cached: the unit of curves, scaling runs and studies.

:func:`train_and_evaluate` fine-tunes a copy of the model on a subset through the training core
(no subset: zero-shot), evaluates it with the evaluation core and returns a JSON-ready record;
:func:`point_identity` is what determines such a record besides its subset and seed (its cache
key's common part, :mod:`dataplan.store`). ``dataplan curve``, ``dataplan scaling runs`` and the
studies all go through these two.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from dataplan.data.formatting import PromptFormatter, PromptSettings
from dataplan.data.loading import Example
from dataplan.digests import examples_digest
from dataplan.evaluation import EvalSettings, evaluate
from dataplan.training.settings import TrainSettings

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

    from dataplan.models.loading import LoadedModel


@dataclass(frozen=True)
class ModelSpec:
    """The model a command loads (shared by every command that loads one).

    Attributes:
        model: a built-in name, a local folder or a hub id.
        device: ``auto`` (CUDA, else CPU), ``cpu``, ``cuda``, ``cuda:1``…
        dtype: ``auto`` (bf16 on CUDA, else fp32), ``float32``, ``bfloat16``, ``float16``.
        trust_remote_code: allow the model's own code (off unless asked).
    """

    model: str
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False

    def load(self, *, device: str | None = None) -> LoadedModel:
        from dataplan.models.loading import load_model

        return load_model(
            self.model,
            device=device or self.device,
            dtype=self.dtype,
            trust_remote_code=self.trust_remote_code,
        )

    def identity(self) -> dict[str, str]:
        """The model's weights and the resolved device type and dtype (for cache keys)."""
        from dataplan.models.loading import model_identity
        from dataplan.store import runtime

        return {"model": model_identity(self.model), **runtime(self.device, self.dtype)}


def point_identity(
    spec: ModelSpec,
    prompts: PromptSettings,
    pool: Sequence[Example],
    test: Sequence[Example],
    train_settings: TrainSettings,
    evaluation: EvalSettings,
) -> dict[str, Any]:
    """What determines an experiment's result besides its subset and seed.

    The evaluation batch size is left out (it does not change what is measured).
    """
    return {
        **spec.identity(),
        "prompts": prompts,
        "pool": examples_digest(pool),
        "test": examples_digest(test),
        "train": train_settings,
        "eval": EvalSettings(max_new_tokens=evaluation.max_new_tokens),
    }


def train_and_evaluate(
    loaded: LoadedModel,
    formatter: PromptFormatter,
    subset: Sequence[Example],
    test: Sequence[Example],
    *,
    train_settings: TrainSettings,
    evaluation: EvalSettings,
    seed: int,
    steps: int | None = None,
    spec: ModelSpec | None = None,
) -> dict[str, Any]:
    """Fine-tune on ``subset`` (none: zero-shot) and evaluate on ``test``.

    LoRA adapters are removed from ``loaded.model`` afterwards; full fine-tuning trains a fresh
    copy loaded from ``spec``. ``steps`` overrides the steps rule (a compute-bounded run).

    Returns:
        ``{"seed", "n_test", <metrics of evaluate>, "train": <training log or None>,
        "seconds"}``.
    """
    from dataplan.training import train

    start = time.perf_counter()
    train_log: dict[str, Any] | None = None
    model: PreTrainedModel | PeftModel = loaded.model
    if subset:
        if train_settings.method == "full":
            if spec is None:
                raise ValueError("full fine-tuning needs the ModelSpec to load a fresh copy")
            from dataplan.compute.distributed import local_device

            model = spec.load(device=local_device(spec.device)).model
        result = train(model, subset, formatter, train_settings, seed=seed, steps=steps)
        model, train_log = result.model, result.log()
    try:
        metrics = evaluate(model, formatter, test, evaluation)
    finally:
        if subset and train_settings.method == "lora":
            loaded.model = cast("PeftModel", model).unload()
            loaded.model.eval()
    return {
        "seed": seed,
        "n_test": len(test),
        **metrics,
        "train": train_log,
        "seconds": time.perf_counter() - start,
    }
