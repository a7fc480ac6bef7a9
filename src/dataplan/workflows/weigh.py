"""``dataplan weigh``: ICA weights of a training set from a small trusted holdout.

Steps, each cached in the run folder (``--run-dir``), so an interrupted run resumes:

1. the demonstrations of every example (k holdout indices)        → ``demonstrations.safetensors``
2. ICA scores, in shards of ``shard_size`` examples                → ``shards/ica-<size>-<i>…``
3. weights (min-max over the pool, floored), written to ``--out`` (parquet: id, line, score,
   weight, loss, loss_in_context, answer_tokens — or, for ``--preference`` pairs, the scores of
   the chosen and the rejected response — and demonstrations) with ``result.json`` and a
   histogram (``weights.png``).

See :mod:`dataplan.training.weighting.ica` and docs/methods.md §6.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dataplan.errors import ConfigError
from dataplan.options import (
    DataOptions,
    ModelOptions,
    PairFieldOptions,
    PromptOptions,
    RunOptions,
    cli,
)
from dataplan.training.weighting.ica import ICASettings

if TYPE_CHECKING:
    from dataplan.models.loading import LoadedModel


@dataclass(kw_only=True)
class WeighConfig(ModelOptions, DataOptions, PairFieldOptions, PromptOptions, RunOptions):
    """Settings of ``dataplan weigh``. Invalid values fail here, before any model loads.

    Attributes:
        holdout: A small trusted labelled holdout (the same fields as --data): the
            demonstrations.
        preference: The data and holdout are preference pairs (prompt, chosen, rejected):
            scored by the change of the chosen-minus-rejected log-probability margin, the
            holdout's chosen responses as demonstrations.
        out: Write every example's score and weight here (.parquet).
        ica: ICA scoring.
        run_dir: Run folder (default runs/weigh-<data>); rerun to resume.
        shard_size: Examples per cached shard (the unit of resume).
    """

    holdout: str
    out: str
    preference: bool = False
    ica: ICASettings = field(default_factory=ICASettings, metadata=cli(nested=True))
    run_dir: str | None = None
    shard_size: int = 256

    def __post_init__(self) -> None:
        self.source  # noqa: B018 - exactly one of --data / --task
        if Path(self.out).suffix.lower() not in (".parquet", ".pq"):
            raise ConfigError(f"--out must end in .parquet, got {self.out!r}")
        if self.shard_size < 1:
            raise ConfigError("--shard-size must be positive")
        if self.preference and self.task is not None:
            raise ConfigError("--preference reads a file of pairs: give --data, not --task")
        if self.ica.normalise == "batch":
            raise ConfigError(
                "--normalise batch: weights normalised within training batches exist only while "
                "training (dataplan train --normalise batch); weigh writes the scores and their "
                "pool-normalised weights"
            )

    def compute_settings(self, data_digest: str, holdout_digest: str) -> dict[str, Any]:
        """The run folder's identity (device and dtype resolved): what the scores depend on — not
        the weight floor, the batch size or the memory budget, so a new floor reuses every cached
        score."""
        from dataplan.models.loading import model_identity
        from dataplan.store import canonical, runtime

        return {
            "model": model_identity(self.model),
            **runtime(self.device, self.dtype),
            "data": data_digest,
            "holdout": holdout_digest,
            "prompts": canonical(self.prompts),
            "ica": self.ica.identity(min_weight=0.0),
            **({"preference": True} if self.preference else {}),
        }


@dataclass
class WeighResult:
    """Scores and weights of every training example (arrays of shape (N,))."""

    ids: list[str]
    score: np.ndarray
    weight: np.ndarray
    demonstrations: np.ndarray  # (N, k) holdout indices
    run_dir: str
    seconds: dict[str, float]

    def summary(self) -> dict[str, Any]:
        w = self.weight
        return {
            "n": len(self.ids),
            "run_dir": self.run_dir,
            "score_quantiles": {
                q: float(np.nanquantile(self.score, q / 100)) for q in (0, 50, 100)
            },
            "weight_mean": float(w.mean()),
            "weight_zero": int((w == 0).sum()),
            "weight_quantiles": {q: float(np.quantile(w, q / 100)) for q in (0, 10, 50, 90, 100)},
            "seconds": self.seconds,
        }


def weigh(cfg: WeighConfig, loaded: LoadedModel | None = None) -> WeighResult:
    """Run ``dataplan weigh`` (see the module docstring); resumable from the run folder."""
    from dataplan.compute.distributed import (
        is_main,
        local_device,
        run_sharded,
        sharded_pass,
    )
    from dataplan.data.loading import load_examples
    from dataplan.digests import examples_digest, pairs_digest
    from dataplan.io import write_parquet
    from dataplan.maths.weights import minmax_weights
    from dataplan.store import ResultStore
    from dataplan.training.weighting.ica import (
        check_holdout,
        choose_demonstrations,
        score_examples,
    )
    from dataplan.workflows.run_folder import RunFolder

    if loaded is None:
        cfg.check_model()
    examples: list[Any]
    holdout: list[Any]
    if cfg.preference:
        from dataplan.data.loading import load_preferences

        pair_fields = cfg.pair_fields(cfg.prompt_field, cfg.id_field)
        examples = load_preferences(cfg.data or "", fields=pair_fields, split=cfg.split)
        holdout = load_preferences(cfg.holdout, fields=pair_fields, default_split=False)
    else:
        examples = cfg.source.load(require_answer=True)
        holdout = load_examples(
            cfg.holdout, fields=cfg.fields, require_answer=True, default_split=False
        )
    check_holdout(holdout, cfg.ica.k, cfg.holdout, examples)
    if cfg.run_dir is None:
        cfg.run_dir = str(Path("runs") / f"weigh-{cfg.source.label}")
    digest = pairs_digest if cfg.preference else examples_digest
    run = RunFolder(cfg.run_dir, cfg.compute_settings(digest(examples), digest(holdout)))
    if is_main():  # fail before loading the model; other ranks check once it is made
        run.check()
    loaded = loaded or cfg.spec.load(device=local_device(cfg.device))
    formatter = cfg.prompts.formatter(loaded.tokenizer)
    run.open_shared()  # under torchrun: rank 0 creates it, the others check it after
    store = ResultStore(run.path)
    seconds: dict[str, float] = {}

    def demonstrations(*_: Any) -> np.ndarray:
        cached = store.get_arrays("demonstrations")
        if cached is not None:
            return cached[0]["index"]
        start = time.perf_counter()
        demos = choose_demonstrations(
            loaded.model, formatter, examples, holdout, cfg.ica, progress=cfg.progress
        )
        store.put_arrays("demonstrations", {"index": demos})
        seconds["demonstrations"] = round(time.perf_counter() - start, 3)
        return demos

    (demos,) = run_sharded([None], demonstrations)  # one rank chooses, every rank gets them
    show = cfg.progress and is_main()

    def scores(_: int, r: range) -> dict[str, np.ndarray]:
        part = [examples[j] for j in r]
        block = score_examples(
            loaded.model, formatter, part, holdout, demos[r.start : r.stop], cfg.ica, show
        )
        return block.columns()

    start = time.perf_counter()
    columns = sharded_pass(
        len(examples),
        scores,
        store=ResultStore(run.path / "shards"),
        name="ica",
        shard_size=cfg.shard_size,
    )
    seconds["scoring"] = round(time.perf_counter() - start, 3)
    weight = minmax_weights(columns["score"], cfg.ica.min_weight)
    table: dict[str, Any] = {
        "id": [e.id for e in examples],
        "line": [e.line for e in examples],
        "score": columns["score"].tolist(),
        "weight": weight.tolist(),
    }
    for key in ("loss", "loss_in_context", "score_chosen", "score_rejected"):
        if key in columns:
            table[key] = columns[key].tolist()
    if "answer_tokens" in columns:
        table["answer_tokens"] = columns["answer_tokens"].astype(int).tolist()
    table["demonstrations"] = [[holdout[j].id for j in row] for row in demos]
    result = WeighResult(
        [e.id for e in examples], columns["score"], weight, demos, str(run.path), seconds
    )
    if not is_main():
        return result  # one writer under torchrun
    write_parquet(run.file("weights.parquet"), table)
    write_parquet(cfg.out, table)
    run.write_json("result.json", {**result.summary(), "config": run.config})
    from dataplan.plots import plot_weights

    plot_weights(run.file("weights.png"), weight, title=f"ICA weights of {cfg.source.label}")
    return result
