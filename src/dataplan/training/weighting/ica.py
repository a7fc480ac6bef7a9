"""ICA reweighting (arXiv 2510.14459): demonstrations, scores and weights of a training set.

For each training example: its k demonstrations from a small trusted holdout (the nearest by
cosine of the model's own mean-pooled prompt embeddings [our choice], or a seeded random draw),
its ICA score (:func:`dataplan.compute.ica.ica_scores`), and a weight by min-max normalisation
over the pool with an optional floor (:func:`dataplan.maths.weights.minmax_weights`). A holdout
example with the same prompt as the training example is never its own demonstration. With a
refresh (``train --refresh R``) the scores are recomputed from the current parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from dataplan.data.formatting import PromptFormatter
from dataplan.data.loading import Example
from dataplan.errors import ConfigError
from dataplan.options import cli
from dataplan.training.weighting.base import Weighting

if TYPE_CHECKING:
    from dataplan.compute.ica import ICAScores, PreferenceICAScores
    from dataplan.training.weights import WeightFunction

DEMOS = ("knn", "random")
_BATCH_SIZE = 8  # --score-batch-size's default
NORMALISATIONS = ("pool", "batch")


@dataclass(frozen=True)
class ICASettings:
    """How ICA scores and weights are computed.

    Attributes:
        k: Demonstrations per example.
        demos: knn (the holdout prompts nearest by cosine of their embeddings) or random (a
            seeded draw per example).
        embedder: What embeds prompts for knn: model (the model's own mean-pooled hidden
            states) or a sentence-transformers model (local folder or hub id; pip install
            'dataplan[embeddings]').
        normalise: Min-max normalise the scores over the whole pool (the authors' code) or
            within each training batch (the paper; train only).
        min_weight: Floor of the normalised weights (0: an example can be silenced).
        score_reduction: sum (the authors': the answer's summed negative log-likelihood) or
            mean over its tokens.
        batch_size: Examples per forward pass when scoring.
        max_memory: Memory budget of the scoring passes, e.g. 4GB: batches (at most
            --score-batch-size) are sized to fit (the Python runtime comes on top).
        seed: Seed of random demonstrations (and of rho's reference adapter).
    """

    panel: ClassVar[str] = "Weighting"

    k: int = 3
    demos: str = "knn"
    embedder: str = "model"
    normalise: str = "pool"
    min_weight: float = 0.0
    score_reduction: str = "sum"
    batch_size: int = field(default=_BATCH_SIZE, metadata=cli(flag="--score-batch-size"))
    max_memory: str | None = None
    seed: int = field(default=0, metadata=cli(flag="--demo-seed"))

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"--k must be at least 1, got {self.k}")
        if self.demos not in DEMOS:
            raise ConfigError(f"--demos must be one of {', '.join(DEMOS)}, got {self.demos!r}")
        if not self.embedder.strip():
            raise ConfigError("--embedder must be 'model' or a sentence-transformers model")
        if self.normalise not in NORMALISATIONS:
            raise ConfigError(f"--normalise must be pool or batch, got {self.normalise!r}")
        if not 0.0 <= self.min_weight < 1.0:
            raise ConfigError(f"--min-weight must be in [0, 1), got {self.min_weight}")
        if self.score_reduction not in ("sum", "mean"):
            raise ConfigError("--score-reduction must be sum or mean")
        if self.batch_size < 1:
            raise ConfigError("--score-batch-size must be positive")
        if self.seed < 0:
            raise ConfigError(f"--demo-seed must be a non-negative integer, got {self.seed}")
        self.memory_budget  # noqa: B018 - validates --max-memory

    @property
    def memory_budget(self) -> int | None:
        """``max_memory`` in bytes (``None``: fixed batches)."""
        from dataplan.compute.memory import parse_memory

        return None if self.max_memory is None else parse_memory(self.max_memory)

    def identity(self, **fixed: Any) -> dict[str, Any]:
        """These settings for a run folder's identity: without how the passes are batched
        (``--score-batch-size``, ``--max-memory``: the same scores in any batches, so a run
        resumes with smaller batches after running out of memory); ``fixed`` sets others
        aside too (weigh: the weight floor, applied after the cached scores)."""
        from dataclasses import replace

        from dataplan.store import canonical

        return canonical(replace(self, batch_size=_BATCH_SIZE, max_memory=None, **fixed))


def is_preference(examples: Sequence[Any]) -> bool:
    """Whether ``examples`` are preference pairs (prompt, chosen, rejected)."""
    from dataplan.data.loading import PreferenceExample

    return bool(examples) and isinstance(examples[0], PreferenceExample)


def check_holdout(holdout: Sequence[Any], k: int, where: str, examples: Sequence[Any] = ()) -> None:
    """An empty holdout, one smaller than k, or one leaving an example fewer than k
    demonstrations (a holdout example with its own prompt is not one) is an input error."""
    from dataplan.errors import InputError

    if not holdout:
        raise InputError("the holdout is empty: ICA needs labelled demonstrations", path=where)
    if k > len(holdout):
        raise InputError(
            f"--k {k} is larger than the holdout of {len(holdout)} examples", path=where
        )
    prompts: dict[str, int] = {}
    for h in holdout:
        prompts[h.prompt] = prompts.get(h.prompt, 0) + 1
    for e in examples:
        if len(holdout) - prompts.get(e.prompt, 0) < k:
            raise InputError(
                f"example {e.id!r} has fewer than --k {k} demonstrations: the holdout repeats "
                "its prompt (an example is never its own demonstration)",
                path=where,
            )


def shared_demonstrations(
    model: Any,
    formatter: PromptFormatter,
    examples: Sequence[Any],
    holdout: Sequence[Any],
    settings: ICASettings,
) -> np.ndarray:
    """:func:`choose_demonstrations` on one rank, shared with every rank (alone: computed)."""
    from dataplan.compute.distributed import run_sharded

    (demos,) = run_sharded(
        [None], lambda *_: choose_demonstrations(model, formatter, examples, holdout, settings)
    )
    return np.asarray(demos)


def choose_demonstrations(
    model: Any,
    formatter: PromptFormatter,
    examples: Sequence[Any],
    holdout: Sequence[Any],
    settings: ICASettings,
    *,
    progress: bool = False,
) -> np.ndarray:
    """(N, k) holdout indices per training example, the most similar first (knn)."""
    from dataplan.maths.weights import nearest_by_cosine

    exclude = np.array([[e.prompt == h.prompt for h in holdout] for e in examples], dtype=bool)
    if settings.demos == "random":
        rng = np.random.default_rng([settings.seed, 11])
        rows = []
        for i in range(len(examples)):
            allowed = np.flatnonzero(~exclude[i])
            if allowed.size < settings.k:
                raise ConfigError(f"example {examples[i].id}: fewer than k holdout examples left")
            rows.append(rng.choice(allowed, size=settings.k, replace=False))
        return np.asarray(rows, dtype=np.int64)
    if settings.embedder != "model":
        from dataplan.compute.embeddings import sentence_embeddings

        device = next(model.parameters()).device
        q = sentence_embeddings(
            settings.embedder,
            [e.prompt for e in examples],
            device=device,
            progress=progress,
        )
        x = sentence_embeddings(settings.embedder, [h.prompt for h in holdout], device=device)
        return nearest_by_cosine(q, x, settings.k, exclude=exclude)
    from dataplan.compute.embeddings import mean_pooled_embeddings

    tok = formatter.tokenizer
    pad = tok.pad_token_id

    def ids(texts: list[str]) -> list[list[int]]:
        return [list(tok(t, add_special_tokens=False)["input_ids"]) or [pad] for t in texts]

    q = mean_pooled_embeddings(
        model,
        ids([e.prompt for e in examples]),
        pad,
        batch_size=settings.batch_size,
        progress=progress,
    )
    x = mean_pooled_embeddings(
        model, ids([h.prompt for h in holdout]), pad, batch_size=settings.batch_size
    )
    return nearest_by_cosine(q, x, settings.k, exclude=exclude)


def score_examples(
    model: Any,
    formatter: PromptFormatter,
    examples: Sequence[Any],
    holdout: Sequence[Any],
    demonstrations: np.ndarray,
    settings: ICASettings,
    progress: bool = False,
) -> ICAScores | PreferenceICAScores:
    """ICA scores of labelled examples (:func:`dataplan.compute.ica.ica_scores`) or of
    preference pairs (:func:`~dataplan.compute.ica.preference_ica_scores`), batched as
    ``settings`` say; ``demonstrations``: (N, k) holdout indices."""
    from dataplan.compute.ica import ica_scores, preference_ica_scores

    if is_preference(examples):
        return preference_ica_scores(
            model,
            formatter,
            examples,
            holdout,
            demonstrations,
            batch_size=settings.batch_size,
            max_memory=settings.memory_budget,
            progress=progress,
        )
    return ica_scores(
        model,
        formatter,
        cast("list[Example]", examples),
        cast("list[Example]", holdout),
        demonstrations,
        reduction=settings.score_reduction,
        batch_size=settings.batch_size,
        max_memory=settings.memory_budget,
        progress=progress,
    )


def ica_weight_function(
    examples: Sequence[Example],
    holdout: Sequence[Example],
    formatter: PromptFormatter,
    settings: ICASettings,
    demonstrations: np.ndarray | None = None,
    to_weights: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: bool = False,
) -> WeightFunction:
    """``fn(model, step) -> weights``: ICA scores under the current model, turned into weights
    by ``to_weights`` (default: min-max over the pool with the settings' floor). Preference
    pairs (with a holdout of pairs) are scored by the change of their margin
    (:func:`dataplan.compute.ica.preference_ica_scores`).

    The demonstrations are chosen once (with the model given first, or ``demonstrations``);
    ``progress`` shows the scoring passes' bars (on the main process).
    Under torchrun every rank calls it; each scores a block of the examples and gets the rest
    from the others (:func:`dataplan.compute.distributed.gather_rows`).
    """
    from dataplan.compute.distributed import gather_rows, is_main
    from dataplan.maths.weights import minmax_weights

    chosen: list[np.ndarray] = [] if demonstrations is None else [demonstrations]

    def block_scores(model: Any, rows: range) -> np.ndarray:
        part = [examples[j] for j in rows]
        demos = chosen[0][rows.start : rows.stop]
        return score_examples(
            model, formatter, part, holdout, demos, settings, progress and is_main()
        ).score

    def weights(model: Any, step: int) -> np.ndarray:
        if not chosen:
            chosen.append(shared_demonstrations(model, formatter, examples, holdout, settings))
        score = gather_rows(len(examples), lambda rows: block_scores(model, rows))
        if to_weights is not None:
            return to_weights(score)
        return minmax_weights(score, settings.min_weight)

    return weights


class ICA(Weighting):
    """ICA reweighting: examples the holdout helps (in context) count more."""

    name: ClassVar[str] = "ica"

    def __init__(
        self,
        holdout: Sequence[Example],
        settings: ICASettings | None = None,
        progress: bool = False,
    ):
        self.holdout = list(holdout)
        self.ica = settings or ICASettings()
        self.progress = progress  # progress bars while scoring; not a setting of the result
        self._functions: dict[int, WeightFunction] = {}

    def settings(self) -> dict[str, Any]:
        from dataplan.store import canonical

        return {"ica": canonical(self.ica)}

    def refresh_function(
        self, model: Any, examples: Sequence[Any], formatter: Any
    ) -> WeightFunction:
        # One function per training set: the demonstrations are chosen once, with the model
        # before training, and kept by every refresh.
        key = id(examples)
        if key not in self._functions:
            demonstrations = shared_demonstrations(
                model, formatter, examples, self.holdout, self.ica
            )
            self._functions[key] = self._weight_function(examples, formatter, demonstrations)
        return self._functions[key]

    def _weight_function(
        self, examples: Sequence[Any], formatter: Any, demonstrations: np.ndarray
    ) -> WeightFunction:
        return ica_weight_function(
            examples, self.holdout, formatter, self.ica, demonstrations, progress=self.progress
        )
