"""``dataplan select``: score every pool example with a proxy model and keep the best subset.

Methods (METHODS.md §4; higher score = kept first unless ``lowest``):

- ``gsnr`` — GRADFILTERING: an ensemble of M LoRA adapters trained on the pool; per-example
  gradient norms at an early and a late checkpoint give the G-SNR of
  :mod:`dataplan.maths.selection` (default form, or ``classic`` with a shared initialisation);
- ``gradnorm`` — mean over members of the late per-example gradient norm;
- ``gradsim`` — LESS-style: cosine between the example's LoRA gradient and the mean gradient of a
  target set, averaged over members and checkpoints (plain gradients, no Adam preconditioning
  [our choice]);
- ``ifd`` — Superfiltering: PPL(answer | prompt) / PPL(answer) of the frozen proxy; IFD ≥ 1
  ranks last;
- ``loss`` — the frozen proxy's answer loss;
- ``random`` — a seeded uniform draw (no model).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dataplan.data.formatting import PromptSettings
from dataplan.data.loading import Example, Fields, load_examples
from dataplan.digests import examples_digest
from dataplan.errors import ConfigError, InputError
from dataplan.io import write_jsonl, write_parquet
from dataplan.maths import selection as sel
from dataplan.training.ensemble import EnsembleSettings
from dataplan.workflows.experiment import ModelSpec
from dataplan.workflows.run_folder import RunFolder

log = logging.getLogger(__name__)

METHODS = ("gsnr", "gradnorm", "gradsim", "ifd", "loss", "random")
BALANCE_BY = ("label", "answer-length")
LABEL_MIN_EXAMPLES = 5  # --balance-by label: a label needs this many pool examples on average
LENGTH_GROUPS = 5  # --balance-by answer-length: at most this many length strata
GRADIENT_METHODS = ("gsnr", "gradnorm", "gradsim")


@dataclass
class SelectConfig:
    """Settings of ``dataplan select``. Invalid values fail here, before any model loads."""

    method: str
    data: str
    model: str | None = None
    fraction: float | None = None
    k: int | None = None
    out: str | None = None
    scores_out: str | None = None
    target: str | None = None
    seed: int = 0
    lowest: bool = False
    balance_by: str | None = None
    run_dir: str | None = None
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    id_field: str = "id"
    split: str | None = None
    chat_template: bool = True
    system_prompt: str | None = None
    members: int | None = None  # None: 3 for gsnr, 1 for gradnorm/gradsim
    lora_r: int = 8
    lora_alpha: float = 16.0
    learning_rate: float = 5e-4
    train_batch_size: int = 8
    epochs: float = 1.0
    checkpoints: tuple[float, ...] = (0.25, 1.0)
    snr_form: str = "default"
    snr_eps: float = 1e-3
    stats_batch_size: int = 8
    loss_batch_size: int = 16
    shard_size: int = 1024
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    progress: bool = True
    fields: Fields = field(init=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if (self.fraction is None) == (self.k is None):
            raise ConfigError("give exactly one of --fraction F or --k N")
        if self.fraction is not None and not (0.0 < self.fraction <= 1.0):
            raise ConfigError(f"--fraction must be in (0, 1], got {self.fraction}")
        if self.k is not None and self.k < 1:
            raise ConfigError(f"--k must be a positive number of examples, got {self.k}")
        if self.method != "random" and not self.model:
            raise ConfigError(f"--model is needed for --method {self.method}")
        if self.method == "gradsim" and not self.target:
            raise ConfigError("--method gradsim needs --target FILE (the examples to resemble)")
        if self.balance_by is not None and self.balance_by not in BALANCE_BY:
            raise ConfigError(f"--balance-by must be one of {', '.join(BALANCE_BY)}")
        if self.snr_form not in sel.GSNR_FORMS:
            raise ConfigError(f"--snr-form must be one of {', '.join(sel.GSNR_FORMS)}")
        if self.members is None:
            self.members = 3 if self.method == "gsnr" else 1
        if self.method == "gsnr" and self.snr_form != "shrinkage" and self.members < 2:
            raise ConfigError("G-SNR needs --members >= 2 (its noise is the members' spread)")
        two_points = self.snr_form in ("default", "shrinkage")
        if self.method == "gsnr" and two_points and len(self.checkpoints) < 2:
            raise ConfigError(f"the {self.snr_form} G-SNR needs an early and a late --checkpoints")
        if self.seed < 0:
            raise ConfigError(f"--seed must be a non-negative integer, got {self.seed}")
        if min(self.stats_batch_size, self.loss_batch_size, self.shard_size) < 1:
            raise ConfigError("batch sizes and --shard-size must be positive")
        for path, flag in ((self.out, "--out"), (self.scores_out, "--scores-out")):
            allowed = (".jsonl", ".parquet", ".pq") if flag == "--out" else (".parquet", ".pq")
            if path is not None and Path(path).suffix.lower() not in allowed:
                raise ConfigError(f"{flag} must end in {' or '.join(allowed)}, got {path!r}")
        self.checkpoints = tuple(float(c) for c in self.checkpoints)
        self.fields = Fields(prompt=self.prompt_field, answer=self.answer_field, id=self.id_field)
        if self.method in GRADIENT_METHODS:
            self.ensemble  # noqa: B018 - validates the ensemble settings now

    def method_settings(self) -> dict[str, Any]:
        """The settings of this method's scores beyond the run folder's (recorded in results)."""
        out: dict[str, Any] = {"method": self.method, "seed": self.seed}
        if self.method in GRADIENT_METHODS:
            out["ensemble"] = self.ensemble.to_dict()
        if self.method == "gsnr":
            out.update(snr_form=self.snr_form, snr_eps=self.snr_eps)
        if self.balance_by:  # only when on: earlier results keep their settings
            out["balance_by"] = self.balance_by
        if self.method == "gradsim":
            out["target"] = self.target
        return out

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(self.model or "", self.device, self.dtype, self.trust_remote_code)

    @property
    def prompts(self) -> PromptSettings:
        return PromptSettings(self.chat_template, self.system_prompt)

    @property
    def ensemble(self) -> EnsembleSettings:
        return EnsembleSettings(
            members=int(self.members or 1),
            rank=self.lora_r,
            alpha=self.lora_alpha,
            learning_rate=self.learning_rate,
            batch_size=self.train_batch_size,
            epochs=self.epochs,
            checkpoints=self.checkpoints,
            shared_init=self.method == "gsnr" and self.snr_form == "classic",
            seed=self.seed,
        )

    def compute_settings(self, data_digest: str) -> dict[str, Any]:
        """The run folder's identity: what every method's scores depend on.

        Method-specific settings (the ensemble, the target set) name the ensemble's sub-folder
        and the cached shards instead, so one folder serves every method: ``gradnorm`` with the
        same ensemble settings reuses the adapters ``gsnr`` trained.
        """
        from dataplan.models.loading import model_identity
        from dataplan.store import runtime

        return {
            "model": None if self.model is None else model_identity(self.model),
            "data": data_digest,
            "chat_template": self.chat_template,
            "system_prompt": self.system_prompt,
            **runtime(self.device, self.dtype),
        }


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
    pool = load_examples(cfg.data, fields=cfg.fields, require_answer=True, split=cfg.split)
    target = None
    if cfg.target:
        target = load_examples(cfg.target, fields=cfg.fields, require_answer=True)
    if cfg.k is not None and cfg.k > len(pool):
        raise InputError(
            f"--k {cfg.k} is larger than the pool of {len(pool)} examples", path=cfg.data
        )
    return pool, target


def select(cfg: SelectConfig, loaded=None) -> SelectResult:
    """Score the pool, rank it and (with ``cfg.out``) write the subset; resumable."""
    pool, target = load_pool(cfg)
    k = sel.subset_size(len(pool), fraction=cfg.fraction, k=cfg.k)
    if cfg.balance_by == "label":
        _check_labels(pool, cfg)
    run = None
    _check_writable(cfg.out, cfg.scores_out)
    if cfg.method != "random":
        from dataplan.compute.distributed import barrier, world

        if cfg.run_dir is None:
            cfg.run_dir = str(Path("runs") / f"select-{Path(cfg.data).stem}")
        run = RunFolder(cfg.run_dir, cfg.compute_settings(examples_digest(pool)))
        if world()[0] == 0:  # one process creates the folder; the others find it made
            run.open()
        barrier()
        run.check()
    seconds: dict[str, float] = {}
    notes: list[str] = []
    if cfg.method == "random":
        scores = np.random.default_rng([cfg.seed, 5]).random(len(pool))
        columns: dict[str, Any] = {}
    else:
        from dataplan.workflows.select_scoring import score_pool

        assert run is not None
        scores, columns, seconds, notes = score_pool(cfg, run, pool, target, loaded)
    n_nan = int(np.isnan(scores).sum())
    if n_nan:
        notes.append(f"{n_nan} examples have no score (NaN) and are ranked last")
    demote = None
    order_by = scores
    if cfg.method == "ifd" and not cfg.lowest:
        demote = scores >= 1.0
        # Superfiltering drops IFD >= 1; when k needs some of them, the closest to 1 come first.
        order_by = np.where(demote, -scores, scores)
        if demote.any():
            notes.append(f"{int(demote.sum())} examples with IFD >= 1 ranked last (Superfiltering)")
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


def answers_are_labels(answers: list[str]) -> bool:
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
    lengths = np.asarray([len(e.answer.strip()) for e in pool], dtype=np.int64)
    groups = sel.length_groups(lengths, LENGTH_GROUPS)
    names = {}
    for g in np.unique(groups).tolist():
        low, high = lengths[groups == g].min(), lengths[groups == g].max()
        names[g] = f"{low} chars" if low == high else f"{low}–{high} chars"
    return groups, names


def _check_labels(pool: list[Example], cfg: SelectConfig) -> None:
    """``--balance-by label`` needs a classification pool: fail before any compute otherwise."""
    answers = [e.answer for e in pool]
    if not answers_are_labels(answers):  # e.g. every sum of an arithmetic task differs
        raise InputError(
            f"--balance-by label: the {cfg.answer_field!r} field has {len(set(answers))} "
            f"distinct values in {len(pool)} examples (fewer than {LABEL_MIN_EXAMPLES} per "
            "value); it balances classification pools, whose answers are a few labels "
            "(free-text answers: --balance-by answer-length)",
            path=cfg.data,
        )


def _balanced(
    rank: np.ndarray, tier: np.ndarray, pool: list[Example], k: int, cfg, notes: list[str]
) -> np.ndarray:
    """The ranking re-ordered so that the subset keeps the pool's share of each group."""
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
        write_parquet(path, {key: [r.get(key) for r in rows] for key in rows[0]})
    else:
        raise ConfigError(f"--out must end in .jsonl or .parquet, got {Path(path).name!r}")


__all__ = ["METHODS", "SelectConfig", "SelectResult", "select", "write_subset"]
