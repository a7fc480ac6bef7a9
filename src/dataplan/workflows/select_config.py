"""Settings of ``dataplan select`` (light: the CLI reads them without loading model code)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataplan.errors import ConfigError
from dataplan.maths import selection as sel
from dataplan.options import (
    DataOptions,
    MemoryOptions,
    ModelOptions,
    PromptOptions,
    RunOptions,
    cli,
    floats,
)
from dataplan.selection import METHODS as REGISTRY
from dataplan.selection import SelectionMethod
from dataplan.training.ensemble import EnsembleSettings

BALANCE_BY = ("label", "answer-length")


@dataclass(kw_only=True)
class SelectConfig(ModelOptions, DataOptions, PromptOptions, MemoryOptions, RunOptions):
    """Settings of ``dataplan select``. Invalid values fail here, before any model loads.

    Attributes:
        method: Scoring method: gsnr, ifd, loss, gradnorm, gradsim or random (or any method
            added to the selection registry).
        model: The proxy: built-in name, local folder or hub id (not needed by random).
        data: The labelled pool to choose from (JSONL, CSV, Parquet, BIG-bench task.json or a
            datasets folder).
        fraction: Keep this fraction of the pool, in (0, 1].
        k: Keep this many examples.
        out: Write the chosen examples here (.jsonl or .parquet).
        scores_out: Every example's score and rank (.parquet).
        target: gradsim: the small target set to resemble.
        seed: Seed of the ensemble, ties and random.
        lowest: Keep the lowest scores instead of the highest.
        balance_by: Keep the pool's share of each group in the subset, the score choosing within
            each: 'label' (the answer; classification pools, at least 5 examples per label on
            average) or 'answer-length' (the answer's length in characters, up to 5 strata). The
            rank column becomes the balanced rank.
        run_dir: Run folder, shared by all methods (default runs/select-<data>; random, which
            needs no model, writes one only when given).
        members: Ensemble size M (default 3 for gsnr, else 1).
        lora_r: LoRA rank of the ensemble's adapters.
        lora_alpha: LoRA alpha of the ensemble's adapters.
        learning_rate: Ensemble learning rate.
        train_batch_size: Ensemble training batch size.
        epochs: Ensemble training passes over the pool.
        checkpoints: Fractions of training where gradients are read (early,late).
        snr_form: default: gradient shrinkage (early-late)/early over the members' late spread;
            shrinkage: the shrinkage alone; classic: |mean g|^2 / mean |g - mean|^2.
        snr_eps: ε in the default G-SNR's denominator.
        stats_batch_size: Examples per backward pass when scoring.
        loss_batch_size: Examples per forward pass for proxy losses (ifd, loss).
        shard_size: Examples per cached shard (the unit of resume and torchrun).
    """

    method: str = "gsnr"
    # Optional here (random needs no model), unlike ModelOptions.model, which every other command
    # requires; not widened there, since the CLI builds each option from its field's type.
    model: str | None = field(default=None, metadata=cli(short="-m"))  # type: ignore[assignment]
    fraction: float | None = None
    k: int | None = field(default=None, metadata=cli(flag="--k"))
    out: str | None = None
    scores_out: str | None = None
    target: str | None = None
    seed: int = 0
    lowest: bool = False
    balance_by: str | None = None
    run_dir: str | None = None
    members: int | None = None  # None: the method's default_members (3 for gsnr, else 1)
    lora_r: int = 8
    lora_alpha: float = 16.0
    learning_rate: float = 5e-4
    train_batch_size: int = 8
    epochs: float = 1.0
    checkpoints: tuple[float, ...] = field(
        default=(0.25, 1.0), metadata=cli(parse=floats("--checkpoints"))
    )
    snr_form: str = "default"
    snr_eps: float = 1e-3
    stats_batch_size: int = 8
    loss_batch_size: int = 16
    shard_size: int = 1024

    def __post_init__(self) -> None:
        self.source  # noqa: B018 - exactly one of --data / --task
        if self.method not in REGISTRY:
            choices = ", ".join(REGISTRY)
            raise ConfigError(f"unknown method {self.method!r}; choose one of {choices}")
        method = self.selection_method
        if (self.fraction is None) == (self.k is None):
            raise ConfigError("give exactly one of --fraction F or --k N")
        if self.fraction is not None and not (0.0 < self.fraction <= 1.0):
            raise ConfigError(f"--fraction must be in (0, 1], got {self.fraction}")
        if self.k is not None and self.k < 1:
            raise ConfigError(f"--k must be a positive number of examples, got {self.k}")
        if method.needs_model and not self.model:
            raise ConfigError(f"--model is needed for --method {self.method}")
        if method.needs_target and not self.target:
            raise ConfigError(
                f"--method {self.method} needs --target FILE (the examples to resemble)"
            )
        if self.balance_by is not None and self.balance_by not in BALANCE_BY:
            raise ConfigError(f"--balance-by must be one of {', '.join(BALANCE_BY)}")
        if self.snr_form not in sel.GSNR_FORMS:
            raise ConfigError(f"--snr-form must be one of {', '.join(sel.GSNR_FORMS)}")
        if self.members is None:
            self.members = method.default_members
        method.validate(self)
        if self.seed < 0:
            raise ConfigError(f"--seed must be a non-negative integer, got {self.seed}")
        self.memory_budget  # noqa: B018 - validates --max-memory
        if min(self.stats_batch_size, self.loss_batch_size, self.shard_size) < 1:
            raise ConfigError("batch sizes and --shard-size must be positive")
        for path, flag in ((self.out, "--out"), (self.scores_out, "--scores-out")):
            allowed = (".jsonl", ".parquet", ".pq") if flag == "--out" else (".parquet", ".pq")
            if path is not None and Path(path).suffix.lower() not in allowed:
                raise ConfigError(f"{flag} must end in {' or '.join(allowed)}, got {path!r}")
        self.checkpoints = tuple(float(c) for c in self.checkpoints)
        if method.needs_ensemble:
            self.ensemble  # noqa: B018 - validates the ensemble settings now

    @property
    def selection_method(self) -> SelectionMethod:
        """The registered method ``self.method``."""
        return REGISTRY[self.method]()

    def method_settings(self) -> dict[str, Any]:
        """The settings of this method's scores beyond the run folder's (recorded in results)."""
        method = self.selection_method
        out: dict[str, Any] = {"method": self.method, "seed": self.seed}
        if method.needs_ensemble:
            out["ensemble"] = self.ensemble.to_dict()
        out.update(method.settings(self))
        if self.balance_by:  # only when on: earlier results keep their settings
            out["balance_by"] = self.balance_by
        if method.needs_target:
            out["target"] = self.target
        return out

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
            shared_init=self.selection_method.shared_init(self),
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
