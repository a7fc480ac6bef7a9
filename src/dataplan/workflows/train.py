"""``dataplan train``: fine-tune with per-example weights (the training core), write an adapter.

Steps: read the data (and the trusted holdout a weighting needs) and check them before any model
loads; compute the first weights with the chosen scheme (:mod:`dataplan.training.weighting`);
fine-tune through :func:`dataplan.training.train`, recomputing the weights ``refresh − 1`` more
times at even intervals; save the adapter (a standard PEFT folder, ``--out``) and, in the run
folder, ``config.json``, ``versions.json``, ``weights.parquet`` (every weighting in force, one
column per step it took effect), ``weights.png``, ``loss.png`` and ``result.json``. While it
trains, ``state/`` holds the ``Trainer``'s checkpoints and the weights in force, so a crashed run
rerun with the same settings resumes from its last checkpoint; it is removed once the results
are written. A finished run rerun with the same settings returns its summary, retraining nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from dataplan.errors import ConfigError, InputError
from dataplan.options import (
    DataOptions,
    ModelOptions,
    PairFieldOptions,
    PromptOptions,
    RunOptions,
    cli,
)
from dataplan.training.settings import TrainSettings
from dataplan.training.weighting.ica import ICASettings

if TYPE_CHECKING:
    from peft import PeftModel

    from dataplan.models.loading import LoadedModel
    from dataplan.training.objectives import Objective

HOLDOUT_WEIGHTINGS = ("ica", "one-shot", "rho", "filter")


@dataclass(kw_only=True)
class TrainConfig(ModelOptions, DataOptions, PairFieldOptions, PromptOptions, RunOptions):
    """Settings of ``dataplan train``. Invalid values fail here, before any model loads.

    Attributes:
        out: Folder for the trained adapter (loadable with PeftModel.from_pretrained).
        objective: sft on (prompt, answer) examples; dpo (TRL's DPOTrainer, the frozen model as
            reference) or simpo (TRL's CPO trainer, loss_type simpo) on preference pairs (prompt,
            chosen, rejected).
        beta: dpo: the KL strength (default 0.1); simpo: the reward scale (default 2.0).
        simpo_gamma: simpo: the target reward margin.
        weighting: uniform, ica, one-shot (ICA with k = 1), rho (RHO-LOSS with an adapter
            trained on the holdout) or filter (the top --keep fraction by ICA score).
        holdout: The trusted labelled holdout the weighting needs (not uniform).
        refresh: Compute the weights this many times: once before training, then again at even
            intervals from the current parameters.
        keep: filter: the fraction of the data kept.
        seed: Seed of the data order and the adapter's initialisation.
        train: Fine-tuning.
        ica: Scoring (ica, one-shot, rho, filter).
        run_dir: Run folder (default: <out>-run).
    """

    out: str
    objective: str = "sft"
    beta: float | None = None
    simpo_gamma: float = 1.0
    weighting: str = "uniform"
    holdout: str | None = None
    refresh: int = 1
    keep: float = 0.75
    seed: int = 0
    train: TrainSettings = field(default_factory=TrainSettings, metadata=cli(nested=True))
    ica: ICASettings = field(default_factory=ICASettings, metadata=cli(nested=True))
    run_dir: str | None = None

    def __post_init__(self) -> None:
        from dataplan.training.weighting import WEIGHTINGS

        self.source  # noqa: B018 - exactly one of --data / --task
        self.training_objective  # noqa: B018 - a known objective with valid options
        if self.preference and self.task is not None:
            raise ConfigError(
                f"--objective {self.objective} trains on preference pairs: give --data FILE "
                "(the suite's tasks are labelled examples)"
            )
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(
                f"unknown --weighting {self.weighting!r}; choose from {', '.join(WEIGHTINGS)}"
            )
        if self.weighting in HOLDOUT_WEIGHTINGS and self.holdout is None:
            raise ConfigError(f"--weighting {self.weighting} needs --holdout FILE")
        if self.refresh < 1:
            raise ConfigError(f"--refresh must be at least 1, got {self.refresh}")
        if self.refresh > 1 and self.weighting == "uniform":
            raise ConfigError("--refresh needs a weighting other than uniform")
        if self.ica.normalise == "batch" and self.weighting in ("uniform", "filter"):
            raise ConfigError(
                f"--normalise batch applies to scored weights (ica, one-shot, rho), not "
                f"--weighting {self.weighting}"
            )
        if not 0.0 < self.keep <= 1.0:
            raise ConfigError(f"--keep must be in (0, 1], got {self.keep}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be a non-negative integer, got {self.seed}")
        if self.train.method != "lora":
            raise ConfigError("dataplan train writes a LoRA adapter: --method lora")

    @property
    def training_objective(self) -> Objective:
        """The objective with its options (raises ConfigError on an unknown name or option)."""
        from dataplan.training.objectives import OBJECTIVES, get_objective

        if self.objective not in OBJECTIVES:
            raise ConfigError(
                f"unknown --objective {self.objective!r}; choose from {', '.join(OBJECTIVES)}"
            )
        options: dict[str, Any] = {}
        if self.objective != "sft":
            options["beta"] = self.beta
        elif self.beta is not None:
            raise ConfigError("--beta belongs to --objective dpo or simpo")
        if self.objective == "simpo":
            options["gamma"] = self.simpo_gamma
        return get_objective(self.objective, **options)

    @property
    def preference(self) -> bool:
        """Whether the objective trains on preference pairs."""
        return self.training_objective.example_kind == "preference"

    def load(self, path: str | None = None) -> list[Any]:
        """The training data (or, with ``path``, the holdout) in the objective's kind."""
        from dataplan.data.loading import load_examples, load_preferences

        if not self.preference:
            if path is None:
                return self.source.load(require_answer=True)
            return load_examples(path, fields=self.fields, require_answer=True, default_split=False)
        fields = self.pair_fields(self.prompt_field, self.id_field)
        where = path or self.data or ""
        try:
            return load_preferences(
                where,
                fields=fields,
                split=None if path else self.split,
                default_split=path is None,
            )
        except InputError as err:
            if err.field not in (fields.chosen, fields.rejected):
                raise
            raise InputError(
                f"{err.message}: --objective {self.objective} trains on preference pairs (fields "
                f"{fields.prompt}, {fields.chosen}, {fields.rejected}); labelled examples train "
                "with --objective sft",
                path=err.path,
                line=err.line,
                field=err.field,
            ) from None

    def scheme(self, holdout: list[Any], cache: Path | None = None) -> Any:
        """The weighting scheme, with its options (``cache``: where RHO-LOSS keeps its
        reference losses)."""
        from dataplan.training.weighting import get_weighting

        if self.weighting == "uniform":
            return get_weighting("uniform")
        options: dict[str, Any] = {
            "holdout": holdout,
            "settings": self.ica,
            "progress": self.progress,
        }
        if self.weighting == "filter":
            options["keep"] = self.keep
        if self.weighting == "rho":
            options["cache"] = cache
        return get_weighting(self.weighting, **options)


def run_train(cfg: TrainConfig, loaded: LoadedModel | None = None) -> dict[str, Any]:
    """Run ``dataplan train`` (see the module docstring); returns the summary."""
    import numpy as np

    from dataplan.compute.distributed import barrier, is_main, local_device, world
    from dataplan.digests import examples_digest, pairs_digest
    from dataplan.io import write_json, write_parquet
    from dataplan.models.loading import model_identity
    from dataplan.plots import plot_loss, plot_weights
    from dataplan.store import canonical, runtime
    from dataplan.training import Refresh, train
    from dataplan.training.core import last_checkpoint
    from dataplan.training.weighting.ica import check_holdout
    from dataplan.workflows.run_folder import RunFolder

    if loaded is None:
        cfg.check_model()
    examples = cfg.load()
    holdout: list[Any] = []
    if cfg.holdout is not None and cfg.weighting != "uniform":  # uniform weighs nothing
        holdout = cfg.load(cfg.holdout)
        k = 1 if cfg.weighting == "one-shot" else cfg.ica.k
        if cfg.weighting != "rho":
            check_holdout(holdout, k, cfg.holdout, examples)
        elif not holdout:
            check_holdout(holdout, 1, cfg.holdout)
    digest = pairs_digest if cfg.preference else examples_digest
    out = Path(cfg.out)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else out.with_name(out.name + "-run")
    identity = {
        "model": model_identity(cfg.model),
        **runtime(cfg.device, cfg.dtype),
        "data": digest(examples),
        "holdout": digest(holdout) if holdout else None,
        "prompts": canonical(cfg.prompts),
        "objective": cfg.objective,
        **(
            {"objective_settings": cfg.training_objective.settings()}
            if cfg.objective != "sft"
            else {}
        ),
        "weighting": cfg.weighting,
        "refresh": cfg.refresh,
        "keep": cfg.keep if cfg.weighting == "filter" else None,
        "seed": cfg.seed,
        "train": canonical(cfg.train),
        "ica": cfg.ica.identity() if cfg.weighting != "uniform" else None,
    }
    _, world_size = world()
    if world_size > 1:  # DDP under torchrun: an effective batch of batch_size × world_size
        identity["world_size"] = world_size
    run = RunFolder(run_dir, identity)
    if is_main():  # fail before loading the model; other ranks check once it is made
        run.check()
    finished = _finished(run, out)
    if finished is not None:  # the same run, already done: its summary, nothing retrained
        return finished
    loaded = loaded or cfg.spec.load(device=local_device(cfg.device))
    formatter = cfg.prompts.formatter(loaded.tokenizer)
    run.open_shared()  # under torchrun: rank 0 creates it, the others check it after
    state = run.file("state")  # Trainer checkpoints and the weights in force: a crash resumes
    scheme = cfg.scheme(holdout, cache=state)  # (and RHO's reference losses)
    steps = cfg.train.steps_for(len(examples), world_size)
    resuming = (state / "weights.safetensors").exists() and last_checkpoint(state) is not None
    # Under torchrun every rank weighs (the same numbers: a RHO reference adapter trains DDP,
    # so no rank may train alone).
    weights = None if resuming else scheme.initial(loaded.model, examples, formatter)
    refresh = None
    if cfg.refresh > 1:
        function = scheme.refresh_function(loaded.model, examples, formatter)
        refresh = Refresh(function, every=max(1, math.ceil(steps / cfg.refresh)))
    result = train(
        loaded.model,
        examples,
        formatter,
        cfg.train,
        objective=cfg.training_objective,
        seed=cfg.seed,
        weights=weights,
        per_batch_floor=cfg.ica.min_weight if cfg.ica.normalise == "batch" else None,
        refresh=refresh,
        save_to=out,
        state_dir=state,
    )
    barrier()
    loaded.model = cast("PeftModel", result.model).unload()  # a LoRA adapter: removed
    loaded.model.eval()
    summary = {
        "adapter": str(out),
        "run_dir": str(run.path),
        "objective": cfg.objective,
        **(
            {"objective_settings": cfg.training_objective.settings()}
            if cfg.objective != "sft"
            else {}
        ),
        "weighting": cfg.weighting,
        "examples": len(examples),
        "world_size": world_size,
        "effective_batch": cfg.train.batch_size * world_size,
        **result.log(),
        "seconds": round(result.seconds, 3),
        "weights": [
            {
                "step": step,
                "mean": float(np.mean(w)),
                "zero": int((np.asarray(w) == 0).sum()),
            }
            for step, w in result.weights
        ],
    }
    if not is_main():
        return summary  # one writer under torchrun
    columns: dict[str, Any] = {"id": [e.id for e in examples], "line": [e.line for e in examples]}
    for step, w in result.weights:
        columns[f"weight_step{step}"] = np.asarray(w).tolist()
    if result.weights:
        write_parquet(run.file("weights.parquet"), columns)
        plot_weights(  # one histogram per refresh
            run.file("weights.png"),
            {
                ("before training" if step == 0 else f"at step {step}"): w
                for step, w in result.weights
            },
            title=f"{cfg.weighting} weights of {cfg.source.label}",
        )
    plot_loss(run.file("loss.png"), result.loss_curve, title=f"training loss ({cfg.weighting})")
    write_json(run.file("result.json"), {**summary, "config": run.config})
    _remove_state(state)
    return summary


def _finished(run: Any, out: Path) -> dict[str, Any] | None:
    """The summary of a finished run in ``run`` (its result.json, the adapter in ``out``), or
    None. The caller has checked that the folder holds a run with these settings."""
    if not (run.has("result.json") and (out / "adapter_config.json").exists()):
        return None
    saved = run.read_json("result.json")
    if saved.get("adapter") != str(out):  # the folder's run wrote its adapter elsewhere
        return None
    saved.pop("config", None)
    return cast("dict[str, Any]", saved)


def _remove_state(state: Path) -> None:
    """Delete the checkpoints (their optimiser states are large) once the results are written:
    renamed first, so that a deletion killed half-way cannot leave a checkpoint without its
    adapter for the next run to resume from."""
    import shutil

    done = state.with_name(state.name + ".done")
    shutil.rmtree(done, ignore_errors=True)
    if state.exists():
        state.rename(done)
    shutil.rmtree(done, ignore_errors=True)
