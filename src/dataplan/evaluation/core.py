"""The evaluation core: a model's answers to a test set, scored every way dataplan scores them.

- ``exact_match`` of the cleaned greedy answer (the CoS-Low paper's metric),
- ``token_f1`` of the same answer (free text),
- ``loglik_accuracy``: the option with the highest log-likelihood, when every test example has
  options (:mod:`dataplan.compute.option_scoring`), with ``loglik_majority_share``,
- ``prediction_majority_share``: share of the most common greedy answer (1.0 = collapsed),
- ``examples``: the first 20 predictions, for reading.

Which of them measures a task is :func:`dataplan.evaluation.metrics.headline_metric`.

Speed: a LoRA adapter is merged into the base weights for the evaluation (restored exactly
after); options are scored with the prompt run once and its KV cache shared by the options,
computing the vocabulary projection only where an option token is predicted; ``options=False``
skips them where no metric in use reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dataplan.data.formatting import PromptFormatter
from dataplan.data.loading import Example
from dataplan.errors import ConfigError

if TYPE_CHECKING:
    import torch

from dataplan.evaluation.metrics import (
    exact_match_accuracy,
    majority_share,
    mean_token_f1,
)


@dataclass(frozen=True)
class EvalSettings:
    """How answers are generated for evaluation.

    Attributes:
        max_new_tokens: the longest generated answer.
        batch_size: prompts generated together.
        options: score the options (``loglik_accuracy``) when every test example has them;
            False where no metric in use reads them (arithmetic: its headline is exact match).
    """

    max_new_tokens: int = 16
    batch_size: int = 64
    options: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError("--max-new-tokens and the evaluation batch size must be positive")


def evaluate(
    model: torch.nn.Module,
    formatter: PromptFormatter,
    test: Sequence[Example],
    settings: EvalSettings | None = None,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Every metric of the module docstring for ``model`` on labelled ``test`` examples; a LoRA
    adapter is merged for the evaluation (:func:`~dataplan.models.lora.merged_for_evaluation`)."""

    from dataplan.models.lora import merged_for_evaluation

    settings = settings or EvalSettings()
    with merged_for_evaluation(model):  # the base weights come back bit for bit
        return _evaluate(model, formatter, test, settings, progress)


def _evaluate(
    model: torch.nn.Module,
    formatter: PromptFormatter,
    test: Sequence[Example],
    settings: EvalSettings,
    progress: bool,
) -> dict[str, Any]:
    generated, preds = _answers(model, formatter, test, settings, progress)
    refs = [e.answer or "" for e in test]
    out: dict[str, Any] = {
        "exact_match": exact_match_accuracy(generated, refs),
        "token_f1": mean_token_f1(generated, refs),
        "prediction_majority_share": majority_share(generated),
        "loglik_accuracy": None,
        "examples": [
            {"id": e.id, "prediction": g} for e, g in zip(test[:20], generated[:20], strict=False)
        ],
    }
    if preds is not None:
        out["loglik_accuracy"] = exact_match_accuracy(preds, refs)
        out["loglik_majority_share"] = majority_share(preds)
    return out


def _answers(
    model: torch.nn.Module,
    formatter: PromptFormatter,
    test: Sequence[Example],
    settings: EvalSettings,
    progress: bool,
) -> tuple[list[str], list[str] | None]:
    """(greedy answers, highest-likelihood options or None) in ``test`` order.

    Under ``torchrun`` the generation batches — length-sorted, exactly those of one process —
    are dealt to the ranks and the answers gathered, so every rank gets the same answers as one
    process would; each rank scores the options of its own batches.
    """
    from dataplan.compute.batching import length_sorted_batches
    from dataplan.compute.distributed import is_main, run_sharded, world
    from dataplan.compute.generation import greedy_answers
    from dataplan.compute.option_scoring import option_predictions

    tokenizer = formatter.tokenizer
    prompt_ids = formatter.generation_prompts(test, settings.max_new_tokens)
    options = settings.options and all(e.choices for e in test)

    def answer(batch: Sequence[int], show: bool) -> tuple[list[str], list[str] | None]:
        gen = greedy_answers(
            model,
            tokenizer,
            [prompt_ids[i] for i in batch],
            batch_size=settings.batch_size,
            max_new_tokens=settings.max_new_tokens,
            progress=show,
            desc="evaluation",
        )
        preds = None
        if options:
            chosen = [test[i] for i in batch]
            preds = option_predictions(model, formatter, chosen, tokenizer.pad_token_id)
        return gen.generated, preds

    if world()[1] == 1:
        return answer(range(len(test)), progress)
    batches = list(length_sorted_batches([len(p) for p in prompt_ids], settings.batch_size))
    parts = run_sharded(batches, lambda _, batch: answer(batch, progress and is_main()))
    generated = [""] * len(test)
    preds: list[str] | None = [""] * len(test) if options else None
    for batch, (gen, opt) in zip(batches, parts, strict=True):
        for j, i in enumerate(batch):
            generated[i] = gen[j]
            if preds is not None and opt is not None:
                preds[i] = opt[j]
    return generated, preds
