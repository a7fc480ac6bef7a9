"""The training core: every fine-tune in dataplan goes through :func:`train`.

Curve points, scaling runs, the selection ensemble, the studies — and next the ``train``
command, ICA reweighting and probes — call this one function. It takes an objective from the
registry (:mod:`dataplan.training.objectives`), optional per-example weights (the loss is the
weighted mean Σ wᵢℓᵢ / Σ wᵢ of :mod:`dataplan.training.losses`) that a :class:`Refresh` may
recompute every R optimiser steps, and saves adapters at given steps. The loop is the Hugging
Face ``Trainer``'s (AdamW, linear decay after warm-up, seeded data order); only the loss is ours,
and only when weights are given.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dataplan.compute.distributed import is_main, world
from dataplan.training.checkpoints import detach_adapters, save_adapter, save_at_steps
from dataplan.training.objectives import Objective, get_objective
from dataplan.training.settings import TrainSettings
from dataplan.training.weights import (
    Refresh,
    WeightTable,
    refresh_callback,
    score_in_eval_mode,
)

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from peft import PeftModel
    from transformers import PreTrainedModel, TrainerCallback

    from dataplan.data.formatting import PromptFormatter


@dataclass
class TrainResult:
    """What a fine-tune produced.

    Attributes:
        model: the trained model — a peft model holding the adapter (``method="lora"``; remove
            it with ``model.unload()`` to get the frozen model back) or the model itself.
        steps: optimiser steps taken.
        seconds: wall time of the training.
        train_loss: the mean training loss: the ``Trainer``'s over every step; after a resume
            (the ``Trainer`` averages only the steps since), the mean of the logged losses,
            each weighted by the steps it covers (the restored log spans the whole run).
        final_loss: the last logged loss (None if nothing was logged).
        loss_curve: ``[(step, loss), ...]`` as logged (every max(1, steps // 10) steps).
        adapter_path: where the final adapter was saved (``save_to``), else None.
        weights: ``[(step, (N,) weights), ...]``: every weighting in force and the step from
            which it held (empty when unweighted).
    """

    model: PeftModel | PreTrainedModel
    steps: int
    seconds: float
    train_loss: float
    final_loss: float | None
    loss_curve: list[tuple[int, float]]
    adapter_path: Path | None = None
    weights: list[tuple[int, np.ndarray]] = field(default_factory=list)

    def log(self) -> dict[str, Any]:
        """The JSON-ready training log cached with results."""
        return {
            "steps": self.steps,
            "train_loss": self.train_loss,
            "final_loss": self.final_loss,
            "loss_curve": [list(p) for p in self.loss_curve],
        }


def train(
    model: PreTrainedModel | PeftModel,
    examples: Sequence[Any],
    formatter: PromptFormatter,
    settings: TrainSettings | None = None,
    *,
    objective: str | Objective = "sft",
    seed: int = 0,
    init_seed: int | None = None,
    steps: int | None = None,
    weights: ArrayLike | None = None,
    per_batch_floor: float | None = None,
    refresh: Refresh | None = None,
    checkpoints: Mapping[int, Path] | None = None,
    save_to: Path | None = None,
    state_dir: Path | None = None,
    save_every: int | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> TrainResult:
    """Fine-tune ``model`` on ``examples``.

    Args:
        model: the model; with ``settings.method == "lora"`` a fresh adapter is attached (its A
            drawn from ``init_seed``, default ``seed``) and ``model`` itself is left unchanged
            (also when training fails); with ``"full"`` ``model`` is trained in place.
        examples: what the objective trains on (labelled examples for ``sft``).
        formatter: the :class:`~dataplan.data.formatting.PromptFormatter` of the model's
            tokenizer.
        settings: hyper-parameters (default :class:`TrainSettings`).
        objective: a registry name or an :class:`Objective` instance.
        seed: data order, dropout and (by default) the adapter's initialisation.
        steps: optimiser steps (default ``settings.steps_for(len(examples), world size)``;
            under ``torchrun`` the ``Trainer`` runs DDP, each process taking
            ``settings.batch_size`` examples per step).
        weights: (N,) non-negative per-example weights; None = unweighted.
        per_batch_floor: min-max normalise the weights again within each batch, with this floor
            (:class:`~dataplan.training.weights.WeightTable`); None: use them as given.
        refresh: recompute the weights every ``refresh.every`` steps from the current model
            (without ``weights``, the first weights come from ``refresh.fn(model, 0)``).
        checkpoints: ``{step: folder}``: save the adapter there after that step (0 = before
            training).
        save_to: save the final adapter (or model, for full fine-tuning) here.
        state_dir: make the training resumable: the ``Trainer``'s checkpoints (model, optimiser,
            scheduler, random states) every ``save_every`` steps (default: a tenth of the steps)
            and every weighting in force are kept here, and a call with the same folder resumes
            from the latest checkpoint with the weights in force at its step.
        save_every: optimiser steps between checkpoints (with ``state_dir``).
        callbacks: more ``transformers.TrainerCallback`` objects.

    Raises:
        ConfigError: on invalid weights.
        ValueError: with no examples.
    """
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if not examples:
        raise ValueError("nothing to train on")
    settings = settings or TrainSettings()
    objective = get_objective(objective)
    # Under torchrun the Trainer runs DDP: each process takes a batch per step.
    total = steps if steps is not None else settings.steps_for(len(examples), world()[1])
    start = time.perf_counter()
    set_seed(seed)
    base = model
    if settings.method == "lora":
        from dataplan.models.lora import attach_lora

        model = attach_lora(model, settings.lora(seed if init_seed is None else init_seed))
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    try:
        table = None
        resume_from = last_checkpoint(state_dir)
        saved = _load_weights(state_dir, resume_from)
        if saved:  # a resumed run: the weights in force at its checkpoint, not recomputed
            table = WeightTable(saved[-1][1], history=saved, per_batch_floor=per_batch_floor)
        elif weights is None and refresh is not None:
            weights = score_in_eval_mode(refresh.fn, model, 0)
        if table is None and weights is not None:
            table = WeightTable(
                np.asarray(weights, dtype=np.float64), per_batch_floor=per_batch_floor
            )
        if table is not None and len(table.current) != len(examples):
            from dataplan.errors import ConfigError

            raise ConfigError(
                f"weights: expected one weight per example ({len(examples)}), "
                f"got {len(table.current)}"
            )
        extra = list(callbacks)
        if checkpoints:
            extra.append(save_at_steps(dict(checkpoints)))
        if table is not None and refresh is not None:
            extra.append(refresh_callback(table, refresh, total))
        if table is not None and state_dir is not None and is_main():
            _save_weights(state_dir, table)
            extra.append(_save_weights_callback(state_dir, table))
        with contextlib.ExitStack() as stack:
            if state_dir is None:
                out_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="dataplan-train-"))
            else:
                out_dir = str(state_dir)
            args = trainer_arguments(
                settings,
                total,
                len(examples),
                out_dir,
                seed=seed,
                save_every=None if state_dir is None else (save_every or max(1, total // 10)),
                weights_dtype=next(base.parameters()).dtype,
            )
            trainer = objective.build_trainer(model, examples, formatter, args, table, extra)
            # Both print the loss log to stdout, which must stay clean for --json.
            trainer.remove_callback(PrinterCallback)
            trainer.remove_callback(ProgressCallback)
            output = trainer.train(resume_from_checkpoint=resume_from)
            history = [h for h in trainer.state.log_history if "loss" in h]
            objective.finish(model)
    except BaseException:
        if settings.method == "lora":  # the caller's model again, without the adapter
            detach_adapters(base)
        raise
    model.eval()
    if save_to is not None and is_main():  # under torchrun every rank holds the same weights
        save_adapter(model, Path(save_to))
    return TrainResult(
        model=model,
        steps=total,
        seconds=time.perf_counter() - start,
        train_loss=(
            float(output.training_loss)
            if resume_from is None or not history
            else _mean_logged_loss(history)
        ),
        final_loss=float(history[-1]["loss"]) if history else None,
        loss_curve=[(int(h["step"]), float(h["loss"])) for h in history],
        adapter_path=None if save_to is None else Path(save_to),
        weights=[] if table is None else list(table.history),
    )


def _mean_logged_loss(history: list[dict[str, Any]]) -> float:
    """Mean loss over the logged steps: each log entry averages the steps since the one before,
    so entry j weighs (step_j − step_{j−1})."""
    steps = np.array([0] + [int(h["step"]) for h in history], dtype=np.float64)
    losses = np.array([float(h["loss"]) for h in history], dtype=np.float64)
    return float(np.average(losses, weights=np.diff(steps)))


def trainer_arguments(
    settings: TrainSettings,
    total: int,
    n: int,
    out_dir: str,
    *,
    seed: int = 0,
    save_every: int | None = None,
    weights_dtype: torch.dtype = torch.float32,
) -> Any:
    """The ``TrainingArguments`` of every fine-tune: ``total`` optimiser steps over ``n``
    examples, AdamW with linear decay after the warm-up, seeded data order, checkpoints in
    ``out_dir`` every ``save_every`` steps (None: no checkpoints), logging every tenth of the
    steps, nothing printed or reported. On a GPU, a model held in bf16 (fp16) trains under bf16
    (fp16) autocast — the LoRA weights and the optimiser stay in fp32 — with pinned host memory
    for the batches; on the CPU, in the model's own precision."""
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()

    return TrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=min(settings.batch_size, n),
        learning_rate=settings.learning_rate,
        max_steps=total,
        warmup_steps=math.floor(settings.warmup_ratio * total),
        weight_decay=settings.weight_decay,
        lr_scheduler_type="linear",
        logging_steps=max(1, total // 10),
        save_strategy="no" if save_every is None else "steps",
        save_steps=save_every or 1,
        save_total_limit=1,
        report_to=[],
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
        bf16=cuda and weights_dtype == torch.bfloat16,
        # fp16 autocast needs fp32 trainable weights (a LoRA adapter's; not a full fp16 model's).
        fp16=cuda and weights_dtype == torch.float16 and settings.method == "lora",
        use_cpu=not cuda,
    )


WEIGHTS_FILE = "weights.safetensors"


def last_checkpoint(state_dir: Path | None) -> str | None:
    """The latest *complete* ``Trainer`` checkpoint in ``state_dir``, if any.

    The ``Trainer`` writes ``trainer_state.json`` last; a checkpoint killed while being written
    lacks it (or holds a truncated one) and is passed over (``transformers``'
    ``get_last_checkpoint`` takes the newest folder, complete or not).
    """
    import json

    if state_dir is None or not Path(state_dir).is_dir():
        return None
    complete = []
    for folder in Path(state_dir).glob("checkpoint-*"):
        step = folder.name.removeprefix("checkpoint-")
        try:
            json.loads((folder / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        if step.isdigit():
            complete.append((int(step), folder))
    return str(max(complete)[1]) if complete else None


def _load_weights(state_dir: Path | None, checkpoint: str | None) -> list[tuple[int, np.ndarray]]:
    """The weightings saved with a run, up to the checkpoint's step (later ones are redone)."""
    if state_dir is None or checkpoint is None or not (Path(state_dir) / WEIGHTS_FILE).exists():
        return []
    from safetensors.numpy import load_file

    step = int(Path(checkpoint).name.rsplit("-", 1)[1])
    saved = load_file(str(Path(state_dir) / WEIGHTS_FILE))
    history = sorted((int(k.removeprefix("step")), v) for k, v in saved.items())
    return [(s, w) for s, w in history if s <= step]


def _save_weights(state_dir: Path, table: WeightTable) -> None:
    from dataplan.store import ResultStore

    arrays = {f"step{s}": np.asarray(w, dtype=np.float64) for s, w in table.history}
    ResultStore(state_dir).put_arrays(WEIGHTS_FILE.removesuffix(".safetensors"), arrays)


def _save_weights_callback(state_dir: Path, table: WeightTable) -> Any:
    """Saves the weightings after every refresh (before the checkpoint of that step)."""
    from transformers import TrainerCallback

    seen = [len(table.history)]

    class SaveWeights(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if len(table.history) != seen[0] and state.is_world_process_zero:
                _save_weights(state_dir, table)
                seen[0] = len(table.history)

    return SaveWeights()
