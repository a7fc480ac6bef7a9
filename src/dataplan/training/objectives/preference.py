"""Preference objectives through TRL: DPO (``DPOTrainer``) and SimPO (the CPO trainer with
``loss_type="simpo"``), each extended with per-example weights.

TRL takes no per-example weights (the request is open upstream, huggingface/trl#5613), so each
trainer is subclassed — TRL's loss code is called, never copied:

- **SimPO**: TRL's ``cpo_loss`` returns the per-pair losses ℓᵢ and the trainer takes their
  mean. The subclass multiplies ℓᵢ by cᵢ = B·wᵢ / Σⱼwⱼ over the batch of B pairs, so the mean
  is Σ wᵢℓᵢ / Σ wᵢ — exactly, in value and gradient.
- **DPO**: ``DPOTrainer`` computes ℓᵢ inside one method and returns only their mean
  L = (1/B) Σ ℓᵢ. Pair i's loss depends on the policy only through rows i (chosen) and B + i
  (rejected) of the per-token log-probabilities the model returns, so the subclass passes those
  rows through an identity whose backward multiplies row i and B + i by cᵢ: the gradient is then
  (1/B) Σ cᵢ ∇ℓᵢ = ∇ (Σ wᵢℓᵢ / Σ wᵢ) exactly. The *logged* loss stays TRL's unweighted mean.
  This holds for DPO's default sigmoid loss (the one dataplan uses), not for losses that mix
  pairs (``aot``, the ``sft`` term).

With every weight 1, cᵢ = 1 and both are TRL's own loss. The reference model of DPO is the
frozen model without the adapter (TRL keeps a copy of the fresh adapter as ``ref``, equal to no
adapter). Tokenisation is dataplan's, as in scoring and evaluation: the formatted prompt, then
each response tokenised alone followed by the end-of-turn token — not TRL's joint tokenisation
of prompt + response (docs/methods.md §2 on why the difference matters).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from dataplan.errors import ConfigError
from dataplan.training.objectives.base import Objective

if TYPE_CHECKING:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from dataplan.data.formatting import PromptFormatter
    from dataplan.training.weights import WeightTable


@dataclasses.dataclass(frozen=True)
class EncodedPair:
    """Token ids of a preference pair: the prompt, and each response with its end token."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


def encode_pairs(formatter: PromptFormatter, pairs: Sequence[Any]) -> list[EncodedPair]:
    """Token ids of preference pairs, each response encoded as an answer of its prompt
    (an unusable response is an input error naming its file, line and field)."""
    from dataplan.data.formatting import encode_examples

    chosen = encode_examples(formatter, [p.response("chosen") for p in pairs])
    rejected = encode_examples(formatter, [p.response("rejected") for p in pairs])
    return [
        EncodedPair(list(c.prompt_ids), [*c.answer_ids, *c.end_ids], [*r.answer_ids, *r.end_ids])
        for c, r in zip(chosen, rejected, strict=True)
    ]


def batch_scale(weights: WeightTable, index: Any) -> torch.Tensor:
    """(B,) cᵢ = B·wᵢ / Σⱼwⱼ for the batch's examples (all 0 when every weight is 0), so that
    the mean of cᵢℓᵢ is the weighted mean Σ wᵢℓᵢ / Σ wᵢ."""
    w = weights.for_batch(torch.as_tensor(index, dtype=torch.long))
    total = w.sum()
    return w * (len(w) / total) if total > 0 else torch.zeros_like(w)


class _ScaleRowGrad(torch.autograd.Function):
    """Identity forward; the backward multiplies row r of the gradient by ``scale[r]``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scale)
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (scale,) = ctx.saved_tensors
        shape = (-1,) + (1,) * (grad.dim() - 1)
        return grad * scale.to(grad.device, grad.dtype).view(shape), None


def scale_row_grad(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged, with the gradient through row r scaled by ``scale[r]`` ((R, ...), (R,))."""
    return _ScaleRowGrad.apply(x, scale)


class _RowWeightedModel:
    """Calls the model and routes its per-token log-probabilities through
    :func:`scale_row_grad` (rows ``[chosen; rejected]`` both scaled by the pair's cᵢ)."""

    def __init__(self, model: torch.nn.Module, scale: torch.Tensor):
        self.model = model
        self.rows = torch.cat([scale, scale])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.model(*args, **kwargs)
        if getattr(out, "log_probs", None) is not None:
            out["log_probs"] = scale_row_grad(out["log_probs"], self.rows)
        return out


def trainer_config(config_class: type, args: TrainingArguments, **options: Any) -> Any:
    """The core's ``TrainingArguments`` as a TRL config class (a subclass) with ``options``."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init}
    return config_class(**values, **options)


def pairs_dataset(encoded: Sequence[EncodedPair], *, ids: bool = True) -> Any:
    """A ``datasets.Dataset`` (TRL's trainers need one) of each pair's index and, with
    ``ids``, its token ids in ``DPOTrainer``'s columns."""
    from datasets import Dataset

    columns: dict[str, list[Any]] = {"example_index": list(range(len(encoded)))}
    if ids:
        columns["prompt_ids"] = [e.prompt_ids for e in encoded]
        columns["chosen_ids"] = [e.chosen_ids for e in encoded]
        columns["rejected_ids"] = [e.rejected_ids for e in encoded]
    return Dataset.from_dict(columns)


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No ``datasets`` progress bars inside (restored after)."""
    from datasets.utils.logging import (
        disable_progress_bar,
        enable_progress_bar,
        is_progress_bar_enabled,
    )

    shown = is_progress_bar_enabled()
    disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            enable_progress_bar()


class _IndexedCollator:
    """A TRL collator that also returns the pairs' indices as ``example_index`` (B,)."""

    def __init__(self, collate: Callable[[list[dict[str, Any]]], dict[str, Any]]):
        self.collate = collate

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        index = torch.tensor([f["example_index"] for f in features], dtype=torch.long)
        batch = self.collate(
            [{k: v for k, v in f.items() if k != "example_index"} for f in features]
        )
        batch["example_index"] = index
        return batch


def _dpo_trainer_class() -> Callable[..., Trainer]:
    from trl import DPOTrainer

    class WeightedDPOTrainer(DPOTrainer):
        """``DPOTrainer`` with per-example weights (module docstring) and dataplan's tokens."""

        def __init__(self, *args: Any, weights: WeightTable | None, **kw: Any):
            self.example_weights = weights
            super().__init__(*args, **kw)

        def _prepare_dataset(self, dataset: Any, *args: Any, **kw: Any) -> Any:
            return dataset  # already tokenised by dataplan (module docstring)

        def compute_loss(
            self,
            model: torch.nn.Module,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            index = inputs.pop("example_index")
            if self.example_weights is not None:
                scale = batch_scale(self.example_weights, index).to(self.accelerator.device)
                model = _RowWeightedModel(model, scale)  # type: ignore[assignment]
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return WeightedDPOTrainer


def _simpo_trainer_class() -> Callable[..., Trainer]:
    from trl.experimental.cpo import CPOTrainer

    class WeightedCPOTrainer(CPOTrainer):
        """The CPO trainer (SimPO loss) with per-example weights and dataplan's tokens."""

        def __init__(
            self,
            *args: Any,
            weights: WeightTable | None,
            encoded: Sequence[EncodedPair],
            **kw: Any,
        ):
            self.example_weights = weights
            self.encoded = list(encoded)
            self._batch_index: Any = None
            super().__init__(*args, **kw)

        def tokenize_row(self, feature: dict[str, Any], model: Any = None) -> dict[str, Any]:
            e = self.encoded[feature["example_index"]]
            row: dict[str, Any] = {
                "prompt_input_ids": e.prompt_ids,
                "prompt_attention_mask": [1] * len(e.prompt_ids),
            }
            for which, ids in (("chosen", e.chosen_ids), ("rejected", e.rejected_ids)):
                row[f"{which}_input_ids"] = e.prompt_ids + ids
                row[f"{which}_attention_mask"] = [1] * (len(e.prompt_ids) + len(ids))
                row[f"{which}_labels"] = [-100] * len(e.prompt_ids) + ids
            return row

        def get_batch_loss_metrics(
            self, model: Any, batch: dict[str, Any], train_eval: str = "train"
        ) -> Any:
            self._batch_index = batch.pop("example_index")
            return super().get_batch_loss_metrics(model, batch, train_eval)  # type: ignore[arg-type]

        def cpo_loss(self, *args: Any, **kw: Any) -> Any:
            losses, chosen_rewards, rejected_rewards = super().cpo_loss(*args, **kw)
            if self.example_weights is None:
                return losses, chosen_rewards, rejected_rewards
            scale = batch_scale(self.example_weights, self._batch_index)
            return losses * scale.to(losses.device, losses.dtype), chosen_rewards, rejected_rewards

    return WeightedCPOTrainer


class _PreferenceObjective(Objective):
    """What DPO and SimPO share: preference pairs, a β, TRL's trainer subclassed."""

    example_kind: ClassVar[str] = "preference"
    default_beta: ClassVar[float]

    def __init__(self, beta: float | None = None):
        beta = self.default_beta if beta is None else beta
        if not beta > 0:
            raise ConfigError(f"--beta must be positive, got {beta}")
        self.beta = float(beta)

    def settings(self) -> dict[str, Any]:
        return {"beta": self.beta}


class DPO(_PreferenceObjective):
    """Direct preference optimisation (TRL's ``DPOTrainer``, sigmoid loss, reference model =
    the frozen model without the adapter).

    Args:
        beta: strength of the implicit KL penalty (TRL's default 0.1).
    """

    name: ClassVar[str] = "dpo"
    default_beta: ClassVar[float] = 0.1

    def build_trainer(
        self,
        model: torch.nn.Module,
        examples: Sequence[Any],
        formatter: PromptFormatter,
        args: TrainingArguments,
        weights: WeightTable | None,
        callbacks: Sequence[TrainerCallback],
    ) -> Trainer:
        from trl import DPOConfig
        from trl.trainer.dpo_trainer import DataCollatorForPreference

        encoded = encode_pairs(formatter, examples)
        pad = formatter.tokenizer.pad_token_id
        config = trainer_config(DPOConfig, args, beta=self.beta, loss_type=["sigmoid"])
        return _dpo_trainer_class()(
            model=model,
            args=config,
            train_dataset=pairs_dataset(encoded),
            data_collator=_IndexedCollator(DataCollatorForPreference(pad_token_id=pad)),
            processing_class=formatter.tokenizer,
            callbacks=list(callbacks),
            weights=weights,
        )

    def finish(self, model: torch.nn.Module) -> None:
        # TRL adds a frozen copy of the fresh adapter, "ref", as the reference: not part of the
        # result (the saved adapter folder holds only the trained one).
        peft_config = getattr(model, "peft_config", {})
        if "ref" in peft_config and len(peft_config) > 1:
            model.delete_adapter("ref")  # type: ignore[operator]


class SimPO(_PreferenceObjective):
    """SimPO (TRL's CPO trainer with ``loss_type="simpo"`` and no NLL term): a reference-free
    margin of length-normalised log-probabilities, −log σ(β·(r_w − r_l) − γ).

    Args:
        beta: reward scale (the SimPO paper's range 2.0–2.5; default 2.0).
        gamma: the target margin γ (default 1.0, i.e. γ/β = 0.5 as in the paper).
    """

    name: ClassVar[str] = "simpo"
    default_beta: ClassVar[float] = 2.0

    def __init__(self, beta: float | None = None, gamma: float = 1.0):
        super().__init__(beta)
        if not gamma >= 0:
            raise ConfigError(f"--simpo-gamma must be non-negative, got {gamma}")
        self.gamma = float(gamma)

    def settings(self) -> dict[str, Any]:
        return {"beta": self.beta, "gamma": self.gamma}

    def build_trainer(
        self,
        model: torch.nn.Module,
        examples: Sequence[Any],
        formatter: PromptFormatter,
        args: TrainingArguments,
        weights: WeightTable | None,
        callbacks: Sequence[TrainerCallback],
    ) -> Trainer:
        from trl.experimental.cpo import CPOConfig
        from trl.experimental.utils import DPODataCollatorWithPadding

        encoded = encode_pairs(formatter, examples)
        config = trainer_config(
            CPOConfig,
            args,
            loss_type="simpo",
            cpo_alpha=0.0,
            beta=self.beta,
            simpo_gamma=self.gamma,
            max_length=max(
                len(e.prompt_ids) + max(len(e.chosen_ids), len(e.rejected_ids)) for e in encoded
            ),
        )
        pad = formatter.tokenizer.pad_token_id
        with _quiet_datasets():  # the trainer's dataset.map bars: nothing to watch on a few rows
            return _simpo_trainer_class()(
                model=model,
                args=config,
                train_dataset=pairs_dataset(encoded, ids=False),  # tokenize_row reads ``encoded``
                data_collator=_IndexedCollator(DPODataCollatorWithPadding(pad_token_id=pad)),
                processing_class=formatter.tokenizer,
                callbacks=list(callbacks),
                weights=weights,
                encoded=encoded,
            )
