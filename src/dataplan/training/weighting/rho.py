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
training set; a refresh recomputes only the first term, from the current parameters. With a
``cache`` folder the second term is kept on disk, so a resumed ``train`` reads it instead of
training the holdout model again (which would cost a fine-tune and, on a GPU without
deterministic kernels, need not reproduce the same numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
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
        cache: a folder keeping the reference losses of each training set (by its digest and
            these settings), read back instead of retraining (None: kept in memory only).
    """

    name: ClassVar[str] = "rho"

    def __init__(
        self,
        holdout: Sequence[Example],
        settings: ICASettings | None = None,
        train_settings: TrainSettings | None = None,
        progress: bool = False,
        cache: str | Path | None = None,
    ):
        self.holdout = list(holdout)
        self.ica = settings or ICASettings()
        self.train_settings = train_settings
        self.cache = None if cache is None else Path(cache)
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
            losses = self._read_cache(model, examples)
            if losses is None:
                losses = self._train_reference(model, examples, formatter)
                self._write_cache(model, examples, losses)
            self._reference[key] = (examples, losses)
        return self._reference[key][1]

    def _cache_entry(self, model: Any, examples: Sequence[Any]) -> tuple[Any, str] | None:
        """(the cache's store, the entry's name) for ``examples`` under ``model`` (its name, the
        device and dtype of its weights), or None without a cache."""
        if self.cache is None:
            return None
        from dataplan.digests import examples_digest, pairs_digest
        from dataplan.store import ResultStore, canonical, key_of
        from dataplan.training.weighting.ica import is_preference

        def digest(items: Sequence[Any]) -> str:
            return (pairs_digest if is_preference(items) else examples_digest)(items)

        weight = next(model.parameters())
        identity = {
            "model": getattr(getattr(model, "config", None), "name_or_path", None),
            "device": weight.device.type,
            "dtype": str(weight.dtype),
            "examples": digest(examples),
            "holdout": digest(self.holdout),
            "settings": self.ica.identity(min_weight=0.0),
            "train": canonical(self.train_settings),
        }
        return ResultStore(self.cache), f"rho-reference-{key_of(identity)}"

    def _read_cache(self, model: Any, examples: Sequence[Any]) -> np.ndarray | None:
        entry = self._cache_entry(model, examples)
        if entry is None:
            return None
        found = entry[0].get_arrays(entry[1])
        return None if found is None else np.asarray(found[0]["losses"], dtype=np.float64)

    def _write_cache(self, model: Any, examples: Sequence[Any], losses: np.ndarray) -> None:
        from dataplan.compute.distributed import is_main

        entry = self._cache_entry(model, examples)
        if entry is not None and is_main():  # every rank holds the same numbers
            entry[0].put_arrays(entry[1], {"losses": losses})

    def _train_reference(self, model: Any, examples: Sequence[Any], formatter: Any) -> np.ndarray:
        """Train the holdout adapter, score ``examples`` with it, remove it."""
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
            return self._losses(trained.model, examples, formatter)
        finally:
            cast("PeftModel", trained.model).unload()  # a LoRA fine-tune

    def refresh_function(
        self, model: Any, examples: Sequence[Any], formatter: Any
    ) -> WeightFunction:
        from dataplan.maths.weights import minmax_weights

        reference = self.reference_losses(model, examples, formatter)  # before training

        def weights(model: Any, step: int) -> np.ndarray:
            scores = self._losses(model, examples, formatter) - reference
            return minmax_weights(scores, self.ica.min_weight)

        return weights
