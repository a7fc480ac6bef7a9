"""RHO-LOSS weights (Mindermann et al. 2022), the reference the ICA paper approximates.

The reducible holdout loss of an example is its loss under the current model minus its loss
under a model trained on the holdout — here the frozen model with a LoRA adapter trained on the
holdout through the training core (the "irreducible loss model")::

    s_RHO(x, y) = ℓ(y | x; θ) − ℓ(y | x; θ_holdout)

ℓ the answer's summed negative log-likelihood (as ICA's, docs/methods.md §6); weights are the
scores min-max normalised over the pool (with ICA's floor). For preference pairs [our choice,
mirroring ICA's preference score] the reference adapter is trained on the holdout's prompts with
their chosen responses and the score is the margin it adds:
``s = [log p_ho(y_w) − log p_ho(y_l)] − [log p(y_w) − log p(y_l)]``. The holdout model is trained once per
training set; a refresh recomputes only the first term, from the current parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from dataplan.data.loading import Example
from dataplan.training.weighting.base import Weighting
from dataplan.training.weighting.ica import ICASettings

if TYPE_CHECKING:
    from peft import PeftModel

    from dataplan.training.settings import TrainSettings
    from dataplan.training.weights import WeightFunction


class RhoLoss(Weighting):
    """RHO-LOSS: examples whose loss the holdout model brings down most count more.

    Args:
        holdout: the trusted examples the reference adapter is trained on.
        settings: scoring options (ICA's: the floor, the reduction, the batch size, the seed of
            the reference adapter's training).
        train_settings: the reference adapter's fine-tuning (default: the curve settings).
    """

    name: ClassVar[str] = "rho"

    def __init__(
        self,
        holdout: Sequence[Example],
        settings: ICASettings | None = None,
        train_settings: TrainSettings | None = None,
        progress: bool = False,
    ):
        self.holdout = list(holdout)
        self.ica = settings or ICASettings()
        self.train_settings = train_settings
        self.progress = progress  # progress bars while scoring; not a setting of the result
        # id(examples) → (examples, their reference losses): the list is kept so that its id
        # cannot be reused by another list while the entry exists.
        self._reference: dict[int, tuple[Sequence[Any], np.ndarray]] = {}

    def settings(self) -> dict[str, Any]:
        from dataplan.store import canonical

        return {"ica": canonical(self.ica), "reference": canonical(self.train_settings)}

    def _losses(self, model: Any, examples: Sequence[Any], formatter: Any) -> np.ndarray:
        """ℓ(y | x) per example; for preference pairs ℓ(y_w | x) − ℓ(y_l | x), minus the
        margin, so that the score below is margin(θ_holdout) − margin(θ). Under torchrun each
        rank computes a block of the examples (every rank calls it)."""
        from dataplan.compute.distributed import gather_rows

        return gather_rows(
            len(examples),
            lambda rows: self._block_losses(model, [examples[j] for j in rows], formatter),
        )

    def _block_losses(self, model: Any, examples: Sequence[Any], formatter: Any) -> np.ndarray:
        from dataplan.training.weighting.ica import is_preference

        if is_preference(examples):
            return self._answer_losses(
                model, [p.response("chosen") for p in examples], formatter, "sum"
            ) - self._answer_losses(
                model, [p.response("rejected") for p in examples], formatter, "sum"
            )
        return self._answer_losses(model, examples, formatter, self.ica.score_reduction)

    def _answer_losses(
        self, model: Any, examples: Sequence[Any], formatter: Any, reduction: str
    ) -> np.ndarray:
        from dataplan.compute.distributed import is_main
        from dataplan.compute.example_stats import answer_losses
        from dataplan.data.formatting import encode_examples

        encoded = encode_examples(formatter, examples)
        losses = answer_losses(
            model,
            encoded,
            formatter.tokenizer.pad_token_id,
            batch_size=self.ica.batch_size,
            max_memory=self.ica.memory_budget,
            progress=self.progress and is_main(),
        )
        if reduction == "sum":
            losses = losses * np.array([len(e.answer_ids) for e in encoded], dtype=np.float64)
        return losses

    def reference_losses(self, model: Any, examples: Sequence[Any], formatter: Any) -> np.ndarray:
        """ℓ(y | x; θ_holdout) of every example (the adapter is trained once, then removed)."""
        key = id(examples)
        if key not in self._reference:
            from dataplan.training.core import train
            from dataplan.training.settings import TrainSettings
            from dataplan.training.weighting.ica import is_preference

            holdout: list[Any] = self.holdout
            if is_preference(holdout):  # the reference learns the holdout's chosen responses
                holdout = [p.response("chosen") for p in holdout]
            trained = train(
                model,
                holdout,
                formatter,
                self.train_settings or TrainSettings(),
                seed=self.ica.seed,
            )
            try:
                losses = self._losses(trained.model, examples, formatter)
                self._reference[key] = (examples, losses)
            finally:
                cast("PeftModel", trained.model).unload()  # a LoRA fine-tune
        return self._reference[key][1]

    def refresh_function(
        self, model: Any, examples: Sequence[Any], formatter: Any
    ) -> WeightFunction:
        from dataplan.maths.weights import minmax_weights

        reference = self.reference_losses(model, examples, formatter)  # before training

        def weights(model: Any, step: int) -> np.ndarray:
            scores = self._losses(model, examples, formatter) - reference
            return minmax_weights(scores, self.ica.min_weight)

        return weights
