"""Supervised fine-tuning: the causal-LM cross-entropy of the answer and the end-of-turn token.

The end-of-turn token stays in the loss: a model trained with it masked never learns to stop
(docs/methods.md §9). Batches are right-padded, labels padded with ``-100``. Unweighted, the loss
is the ``Trainer``'s (the mean over the batch's labelled tokens); weighted, it is
:func:`dataplan.training.losses.weighted_loss` with the objective's ``reduction``. Either way
logits are computed only at the positions that predict a labelled token
(:func:`answer_token_losses`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from dataplan.compute.batching import pad_batch
from dataplan.errors import ConfigError
from dataplan.training.losses import REDUCTIONS, weighted_loss
from dataplan.training.objectives.base import Objective

if TYPE_CHECKING:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from dataplan.data.formatting import Encoded, PromptFormatter
    from dataplan.training.weights import WeightTable


class EncodedDataset(torch.utils.data.Dataset):
    """Encoded labelled examples as ``input_ids``, ``labels`` (end token kept) and their index."""

    def __init__(self, encoded: Sequence[Encoded]):
        self.encoded = list(encoded)

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i: int) -> dict[str, Any]:
        e = self.encoded[i]
        return {
            "input_ids": e.input_ids(with_end=True),
            "labels": e.labels(with_end=True),
            "example_index": i,
        }


class Collator:
    """Right padding; labels padded with -100; the examples' indices as a (B,) tensor."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids, mask = pad_batch([b["input_ids"] for b in batch], self.pad_id, side="right")
        labels, _ = pad_batch([b["labels"] for b in batch], -100, side="right")
        index = torch.tensor([b["example_index"] for b in batch], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "example_index": index}


def answer_token_losses(
    model: torch.nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Token losses at the labelled positions only, computing logits only where some example of
    the batch has a label (the vocabulary projection of prompt positions is most of a long
    prompt's logits and never enters the loss).

    Args:
        model: a causal LM (a peft model too).
        inputs: ``input_ids`` and ``attention_mask``, (B, S).
        labels: (B, S), ``-100`` where not in the loss.

    Returns:
        ``(losses, mask, outputs)``: (B, K) token losses (0 where masked) and the mask of
        labelled ones, K the positions kept; the model's outputs (logits (B, K, V)). The same
        numbers as :func:`~dataplan.training.losses.token_losses` on all logits (tested).
    """
    targets = labels[:, 1:]
    keep = targets.ne(-100).any(dim=0).nonzero().squeeze(-1)  # (K,) predicting positions
    try:
        outputs = model(**inputs, logits_to_keep=keep)
        logits = outputs.logits
    except TypeError:  # an architecture without logits_to_keep: all logits, then select
        outputs = model(**inputs)
        logits = outputs.logits[:, keep]
    kept = targets[:, keep]  # (B, K): the token each kept position predicts
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # the loss in float32 at least, as the Trainer's
    mask = kept.ne(-100)
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), kept.reshape(-1), ignore_index=-100, reduction="none"
    ).view(kept.shape)
    return losses * mask, mask, outputs


def _sft_trainer_class() -> Callable[..., Trainer]:
    from transformers import Trainer

    class WeightedSFTTrainer(Trainer):
        """The ``Trainer`` with per-example weights in its loss (the loss code is ours, the loop
        is the ``Trainer``'s)."""

        def __init__(self, *args: Any, weights: WeightTable | None, reduction: str, **kw: Any):
            super().__init__(*args, **kw)
            self.example_weights = weights
            self.reduction = reduction
            self.loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer scales it for GA

        def compute_loss(
            self,
            model: torch.nn.Module,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: torch.Tensor | int | None = None,
        ) -> Any:
            index = inputs.pop("example_index")
            labels = inputs.pop("labels")
            losses, mask, outputs = answer_token_losses(model, inputs, labels)
            if self.example_weights is None:  # the Trainer's loss: the mean labelled-token loss
                loss = losses.sum() / mask.sum().clamp(min=1)
            else:
                weights = self.example_weights.for_batch(index).to(losses.device)
                loss = weighted_loss(losses, mask, weights, self.reduction)
            return (loss, outputs) if return_outputs else loss

    return WeightedSFTTrainer


class SFT(Objective):
    """Supervised fine-tuning on (prompt, answer) examples.

    Args:
        reduction: how per-example weights combine token losses (``tokens`` or ``examples``,
            :mod:`dataplan.training.losses`); irrelevant without weights.
    """

    name: ClassVar[str] = "sft"
    example_kind: ClassVar[str] = "labelled"

    def __init__(self, reduction: str = "tokens"):
        if reduction not in REDUCTIONS:
            raise ConfigError(
                f"unknown loss reduction {reduction!r}; choose {', '.join(REDUCTIONS)}"
            )
        self.reduction = reduction

    def settings(self) -> dict[str, Any]:
        return {} if self.reduction == "tokens" else {"reduction": self.reduction}

    def build_trainer(
        self,
        model: torch.nn.Module,
        examples: Sequence[Any],
        formatter: PromptFormatter,
        args: TrainingArguments,
        weights: WeightTable | None,
        callbacks: Sequence[TrainerCallback],
    ) -> Trainer:
        from dataplan.data.formatting import encode_examples

        trainer_class = _sft_trainer_class()
        return trainer_class(
            model=model,
            args=args,
            train_dataset=EncodedDataset(encode_examples(formatter, examples)),
            data_collator=Collator(formatter.tokenizer.pad_token_id),
            callbacks=list(callbacks),
            weights=weights,
            reduction=self.reduction,
        )
