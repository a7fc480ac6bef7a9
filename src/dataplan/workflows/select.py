"""``dataplan select``: score every pool example with a proxy model and keep the best subset.

The methods (docs/methods.md §5; higher score = kept first unless ``lowest``) are registered in
:data:`dataplan.selection.METHODS`, one module each, whose docstring gives its score: ``gsnr``
(GRADFILTERING's G-SNR over a LoRA ensemble), ``gradnorm``, ``gradsim`` (LESS-style), ``ifd``
(Superfiltering), ``loss`` and ``random``. :data:`METHODS` holds their names.

``balance_by`` re-orders any method's ranking so that every prefix keeps the pool's share of
each group (:func:`dataplan.maths.selection.balance_ranks`): ``label`` groups by the answer (a
classification pool), ``answer-length`` by the answer's length in characters
(:func:`dataplan.maths.selection.length_groups`). The scores otherwise tend to favour one kind of
example — a few labels, or only the short or only the long answers — and the fine-tuned model
learns that kind as its prior: a subset of one label answers only that label, a subset of 2-digit
sums never answers a 3-digit one (docs/select.md).

Run folder (resumable, shared by every method on the same model and pool): ``config.json``,
``versions.json``, ``ensemble-<settings digest>/member-m/step-s/`` (adapters),
``shards/<pass>-<size>-<i>.safetensors`` (per-shard statistics), ``scores-<method>.parquet``,
``result-<method>.json``. Scoring is cut into shards of ``shard_size`` examples that ``torchrun``
processes share (:mod:`dataplan.compute.distributed`). The subset and the scores file are written
only once every score exists, atomically.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from dataplan.data.loading import Example, Fields, load_examples
from dataplan.digests import examples_digest
from dataplan.errors import ConfigError, InputError
from dataplan.io import write_jsonl, write_parquet
from dataplan.maths import selection as sel
from dataplan.selection import METHODS as REGISTRY
from dataplan.selection import PoolStatistics
from dataplan.workflows.run_folder import RunFolder
from dataplan.workflows.select_config import SelectConfig

if TYPE_CHECKING:
    from dataplan.models.loading import LoadedModel

log = logging.getLogger(__name__)

METHODS = tuple(REGISTRY)  # the built-in methods' names (the registry may gain more)
LABEL_MIN_EXAMPLES = 5  # --balance-by label: a label needs this many pool examples on average
LENGTH_GROUPS = 5  # --balance-by answer-length: at most this many length strata


@dataclass
class SelectResult:
    """Scores and the chosen subset."""

    method: str
    n_pool: int
    k: int
    scores: np.ndarray  # (N,)
    rank: np.ndarray  # (N,), 0 = best
    selected: list[Example]
    columns: dict[str, Any]  # everything written to scores.parquet
    run_dir: str | None
    seconds: dict[str, float]
    notes: list[str]

    def summary(self) -> dict[str, Any]:
        s = self.scores[np.isfinite(self.scores)]
        return {
            "method": self.method,
            "n_pool": self.n_pool,
            "k": self.k,
            "run_dir": self.run_dir,
            "score_quantiles": {q: float(np.quantile(s, q / 100)) for q in (0, 10, 50, 90, 100)}
            if s.size
            else {},
            "selected_ids": [e.id for e in self.selected],
            "seconds": self.seconds,
            "notes": self.notes,
        }


def load_pool(cfg: SelectConfig) -> tuple[list[Example], list[Example] | None]:
    pool = cfg.source.load(require_answer=True)
    target = None
    if cfg.target:
        target = load_examples(
            cfg.target, fields=cfg.fields, require_answer=True, default_split=False
        )
    if cfg.k is not None and cfg.k > len(pool):
        raise InputError(
            f"--k {cfg.k} is larger than the pool of {len(pool)} examples",
            path=cfg.data or cfg.task,
        )
    return pool, target


def select(cfg: SelectConfig, loaded: LoadedModel | None = None) -> SelectResult:
    """Score the pool, rank it and (with ``cfg.out``) write the subset; resumable.

    ``loaded``: the proxy model already loaded (:meth:`ModelSpec.load`), else loaded here.
    """
    if loaded is None:
        cfg.check_model()
    method = cfg.selection_method
    pool, target = load_pool(cfg)
    k = sel.subset_size(len(pool), fraction=cfg.fraction, k=cfg.k)
    if cfg.balance_by == "label":
        _check_labels(pool, cfg)
    run = None
    _check_writable(cfg.out, cfg.scores_out)
    if method.needs_model or cfg.run_dir is not None:  # random: a folder only when asked
        if cfg.run_dir is None:
            cfg.run_dir = str(Path("runs") / f"select-{cfg.source.label}")
        run = RunFolder(cfg.run_dir, cfg.compute_settings(examples_digest(pool)))
        run.open_shared()  # under torchrun: rank 0 creates it, the others check it after
    seconds: dict[str, float] = {}
    notes: list[str] = []
    if not method.needs_model:
        scores, columns, notes = method.score(cfg, PoolStatistics(pool=pool))
    else:
        from dataplan.workflows.select_scoring import score_pool

        assert run is not None
        scores, columns, seconds, notes = score_pool(cfg, run, pool, target, loaded)
    n_nan = int(np.isnan(scores).sum())
    if n_nan:
        notes.append(f"{n_nan} examples have no score (NaN) and are ranked last")
    demote = None
    order_by = scores
    demoted = None if cfg.lowest else method.demote(scores)
    if demoted is not None:
        demote, note = demoted
        order_by = np.where(demote, -scores, scores)  # the demoted: lowest (nearest kept) first
        if demote.any():
            notes.append(note)
    rank = sel.rank_scores(order_by, descending=not cfg.lowest, seed=cfg.seed, demote=demote)
    if cfg.balance_by:  # the demoted and the unscored stay last
        rank = _balanced(rank, sel.rank_tiers(scores, demote), pool, k, cfg, notes)
    chosen_idx = np.flatnonzero(rank < k)
    chosen_idx = chosen_idx[np.argsort(rank[chosen_idx])]
    selected = [pool[i] for i in chosen_idx]
    table = {
        "id": [e.id for e in pool],
        "line": [e.line for e in pool],
        "score": scores.tolist(),
        "rank": rank.tolist(),
        "selected": (rank < k).tolist(),
        "group": mix_groups(pool, cfg.balance_by),
        **{name: np.asarray(col).tolist() for name, col in columns.items()},
    }
    result = SelectResult(
        method=cfg.method,
        n_pool=len(pool),
        k=k,
        scores=scores,
        rank=rank,
        selected=selected,
        columns=table,
        run_dir=str(run.path) if run else None,
        seconds=seconds,
        notes=notes,
    )
    from dataplan.compute.distributed import world

    if world()[0] != 0:
        return result  # one writer under torchrun
    if run is not None:
        write_parquet(run.file(f"scores-{cfg.method}.parquet"), table)
        run.write_json(
            f"result-{cfg.method}.json",
            {**result.summary(), "config": run.config, "settings": cfg.method_settings()},
        )
    if cfg.scores_out:
        write_parquet(cfg.scores_out, table)
    if cfg.out:
        write_subset(cfg.out, selected, cfg.fields)
    return result


def answers_are_labels(answers: Sequence[str | None]) -> bool:
    """A classification pool: at least ``LABEL_MIN_EXAMPLES`` examples per distinct answer."""
    return len(set(answers)) * LABEL_MIN_EXAMPLES <= len(answers)


def balance_groups(pool: list[Example], balance_by: str) -> tuple[np.ndarray, dict[Any, str]]:
    """The group of each pool example under ``--balance-by``, shape (N,), and each group's name.

    ``label``: the answer itself; ``answer-length``: the stratum of the answer's length in
    characters (:func:`dataplan.maths.selection.length_groups`), named by its span.
    """
    if balance_by == "label":
        labels = [e.answer for e in pool]
        return np.asarray(labels, dtype=object), {g: repr(g) for g in set(labels)}
    # The pool was loaded with require_answer: every answer is a string.
    lengths = np.asarray([len(cast(str, e.answer).strip()) for e in pool], dtype=np.int64)
    groups = sel.length_groups(lengths, LENGTH_GROUPS)
    names = {}
    for g in np.unique(groups).tolist():
        low, high = lengths[groups == g].min(), lengths[groups == g].max()
        names[g] = f"{low} chars" if low == high else f"{low}–{high} chars"
    return groups, names


def mix_groups(pool: list[Example], balance_by: str | None) -> list[str]:
    """Each example's group name, to compare the subset's mix with the pool's (the report):
    those of ``balance_by``, else labels where the answers are labels, else answer lengths."""
    by = balance_by or (
        "label" if answers_are_labels([e.answer for e in pool]) else "answer-length"
    )
    groups, names = balance_groups(pool, by)
    return [names[g] for g in groups.tolist()]


def _check_labels(pool: list[Example], cfg: SelectConfig) -> None:
    """``--balance-by label`` needs a classification pool: fail before any compute otherwise."""
    answers = [e.answer for e in pool]
    if not answers_are_labels(answers):  # e.g. every sum of an arithmetic task differs
        raise InputError(
            f"--balance-by label: the {cfg.answer_field!r} field has {len(set(answers))} "
            f"distinct values in {len(pool)} examples (fewer than {LABEL_MIN_EXAMPLES} per "
            "value); it balances classification pools, whose answers are a few labels "
            "(free-text answers: --balance-by answer-length)",
            path=cfg.data or cfg.task,
        )


def _balanced(
    rank: np.ndarray,
    tier: np.ndarray,
    pool: list[Example],
    k: int,
    cfg: SelectConfig,
    notes: list[str],
) -> np.ndarray:
    """The ranking re-ordered so that the subset keeps the pool's share of each group."""
    assert cfg.balance_by is not None  # only called with --balance-by
    groups, names = balance_groups(pool, cfg.balance_by)
    balanced = sel.balance_ranks(rank, groups, tier=tier)
    pooled = Counter(groups.tolist())
    kept = Counter(g for g, r in zip(groups.tolist(), balanced, strict=True) if r < k)
    if cfg.balance_by == "label":  # possibly many labels: their range, not each
        per_label = [kept.get(g, 0) for g in pooled]
        notes.append(
            f"balanced by {cfg.answer_field!r}: {len(pooled)} labels, "
            f"{min(per_label)}–{max(per_label)} kept per label"
        )
    else:  # at most LENGTH_GROUPS strata: each one
        shares = "; ".join(
            f"{names[g]}: {kept.get(g, 0)} of {n}" for g, n in sorted(pooled.items())
        )
        notes.append(f"balanced by the length of {cfg.answer_field!r}: {shares}")
    return balanced


def _check_writable(*paths: str | None) -> None:
    """Fail before any compute if an output cannot be written (its folder is created)."""
    import os

    for path in paths:
        if path is None:
            continue
        parent = Path(path).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"{path}: cannot create its folder ({err.strerror or err})") from None
        if not os.access(parent, os.W_OK) or Path(path).is_dir():
            raise ConfigError(f"{path}: cannot write there")


def write_subset(path: str | Path, examples: list[Example], fields: Fields) -> None:
    """The chosen examples, best first, in the input's field names (.jsonl or .parquet)."""

    def record(e: Example) -> dict[str, Any]:
        rec: dict[str, Any] = {fields.id: e.id, fields.prompt: e.prompt, fields.answer: e.answer}
        if e.choices is not None:
            rec["choices"] = list(e.choices)
        return rec

    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        write_jsonl(path, (record(e) for e in examples))
    elif suffix in (".parquet", ".pq"):
        rows = [record(e) for e in examples]
        keys = dict.fromkeys([fields.id, fields.prompt, fields.answer])
        keys.update(dict.fromkeys(k for r in rows for k in r))  # "choices" if any has them
        write_parquet(path, {key: [r.get(key) for r in rows] for key in keys})
    else:
        raise ConfigError(f"--out must end in .jsonl or .parquet, got {Path(path).name!r}")


__all__ = ["METHODS", "SelectConfig", "SelectResult", "select", "write_subset"]
