"""In-context approximation (ICA) scores of training examples (arXiv 2510.14459).

The score of a training example (x, y) under the current model θ is how much conditioning on k
holdout demonstrations lowers the loss of its answer — an in-context stand-in for the reducible
holdout loss of RHO-LOSS that needs no model trained on the holdout::

    s_ICA(x, y) = ℓ(y | x; θ) − ℓ(y | [d_1 … d_k; x]; θ)

ℓ is the negative log-likelihood of the answer tokens, summed over them as in the authors' code
(``reduction="sum"``; ``"mean"`` divides by the answer's tokens) [docs/methods.md §6]. The end-of-
turn token is not scored. The context prompt follows the authors' template (the demonstrations
in the user turn, then the question), formatted like every prompt (chat template, system prompt);
the base prompt is x formatted as in training, so ℓ(y | x) is the example's training loss.
Both passes are batched by length (:func:`dataplan.compute.example_stats.answer_losses`): the
context pass dominates, its sequences several times longer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dataplan.data.formatting import Encoded, PromptFormatter
from dataplan.data.loading import Example

DEMO_HEADER = "Prefer responses the questions follow examples:\n"
"""The authors' words before each demonstration (HeurAgenix ``weight_by_holdout.py``)."""


def context_prompt(demonstrations: Sequence[tuple[str, str]], prompt: str) -> str:
    """The user turn with k demonstrations (question, answer) before the question."""
    block = "".join(f"{DEMO_HEADER}Question: {q}\nAnswer: {a}\n" for q, a in demonstrations)
    return f"{block}\n\nPlease answer the following question:{prompt}\nAnswer:"


@dataclass
class ICAScores:
    """Per-example results, each (N,).

    Attributes:
        score: s_ICA (higher: the holdout makes the answer more likely — a useful example).
        loss: ℓ(y | x), the base loss (summed or mean, as the score).
        loss_in_context: ℓ(y | [demonstrations; x]).
        answer_tokens: the answer's tokens (what ``sum`` sums over).
    """

    score: np.ndarray
    loss: np.ndarray
    loss_in_context: np.ndarray
    answer_tokens: np.ndarray

    def columns(self) -> dict[str, np.ndarray]:
        """The per-example columns ``weigh`` writes."""
        return {
            "score": self.score,
            "loss": self.loss,
            "loss_in_context": self.loss_in_context,
            "answer_tokens": self.answer_tokens,
        }


def ica_scores(
    model: Any,
    formatter: PromptFormatter,
    examples: Sequence[Example],
    holdout: Sequence[Example],
    demonstrations: np.ndarray,
    *,
    reduction: str = "sum",
    batch_size: int = 8,
    max_memory: int | None = None,
    progress: bool = False,
) -> ICAScores:
    """ICA scores of ``examples`` with demonstrations ``holdout[demonstrations[i]]``.

    Args:
        model: the current model (eval mode is set for the passes).
        formatter: prompt formatting (the same as in training).
        examples: labelled training examples.
        holdout: labelled demonstrations.
        demonstrations: (N, k) holdout indices per example, in the order shown.
        reduction: ``sum`` (the authors') or ``mean`` over the answer tokens.
        max_memory: a budget in bytes each pass's batches are sized to (the longer, in-context
            pass gets fewer examples per batch).
    """
    from dataplan.compute.example_stats import answer_losses
    from dataplan.data.formatting import encode_examples

    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be sum or mean, got {reduction!r}")
    base = encode_examples(formatter, examples)
    ctx = []
    for e, enc, row in zip(examples, base, demonstrations, strict=True):
        shown = [(holdout[j].prompt, holdout[j].answer or "") for j in row]
        prompt_ids = tuple(formatter.prompt_ids(context_prompt(shown, e.prompt)))
        formatter.check_length(len(prompt_ids) + len(enc.answer_ids), "the prompt in context")
        ctx.append(Encoded(prompt_ids, enc.answer_ids, enc.end_ids))
    pad = formatter.tokenizer.pad_token_id
    loss = answer_losses(
        model, base, pad, batch_size=batch_size, max_memory=max_memory, progress=progress,
        desc="ICA base",
    )  # fmt: skip
    loss_ctx = answer_losses(
        model, ctx, pad, batch_size=batch_size, max_memory=max_memory, progress=progress,
        desc="ICA in context",
    )  # fmt: skip
    tokens = np.array([len(e.answer_ids) for e in base], dtype=np.float64)
    if reduction == "sum":
        loss, loss_ctx = loss * tokens, loss_ctx * tokens
    return ICAScores(loss - loss_ctx, loss, loss_ctx, tokens.astype(np.int64))


@dataclass
class PreferenceICAScores:
    """Per-pair results, each (N,).

    Attributes:
        score: the change of the log-probability margin in context (higher: the holdout favours
            the chosen response over the rejected one more).
        chosen, rejected: the ICA scores of each response alone (``score = chosen − rejected``).
    """

    score: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray

    def columns(self) -> dict[str, np.ndarray]:
        """The per-pair columns ``weigh`` writes."""
        return {"score": self.score, "score_chosen": self.chosen, "score_rejected": self.rejected}


def preference_ica_scores(
    model: Any,
    formatter: PromptFormatter,
    pairs: Sequence[Any],
    holdout: Sequence[Any],
    demonstrations: np.ndarray,
    *,
    batch_size: int = 8,
    max_memory: int | None = None,
    progress: bool = False,
) -> PreferenceICAScores:
    """ICA scores of preference pairs (DPO/SimPO data) [docs/methods.md §6]::

        s = [log p_ctx(y_w) − log p_ctx(y_l)] − [log p(y_w) − log p(y_l)]

    with log p the summed log-probability of a response, and the demonstrations holdout prompts
    with their *chosen* responses. Since log p = −ℓ, s = s_ICA(y_w) − s_ICA(y_l).

    Args:
        pairs: :class:`~dataplan.data.loading.PreferenceExample` (prompt, chosen, rejected).
        holdout: preference pairs whose chosen responses are shown.
        demonstrations: (N, k) holdout indices per pair.
    """
    shown = [h.response("chosen") for h in holdout]
    scores = [
        ica_scores(
            model,
            formatter,
            [p.response(response) for p in pairs],
            shown,
            demonstrations,
            reduction="sum",
            batch_size=batch_size,
            max_memory=max_memory,
            progress=progress,
        )
        for response in ("chosen", "rejected")
    ]
    chosen, rejected = scores
    return PreferenceICAScores(chosen.score - rejected.score, chosen.score, rejected.score)
