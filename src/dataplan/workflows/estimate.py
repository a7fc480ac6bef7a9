"""``dataplan estimate``: CoS-Low of a task and the data budget it forecasts, in a run folder.

Steps (each cached in the run folder, so an interrupted run resumes):

1. confidence over the pool (greedy answers)            → ``confidences.parquet``
2. lowest ``low_fraction``, ``n_labeled`` sampled (seed) → ``chosen.jsonl``
   (an unlabelled pool stops here when asked to write the examples to annotate)
3. per-example LoRA gradients of the labelled chosen set → ``gradients-*.safetensors``
   and, as a baseline, of as many random pool examples
4. CoS-Low, baselines, and the forecast when a calibration is known → ``result.json``,
   ``curve.png``
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dataplan.calibrations import get_calibration, has_calibration
from dataplan.data.formatting import PromptFormatter
from dataplan.data.loading import Example, Fields, load_examples
from dataplan.digests import examples_key, file_digest, task_digest
from dataplan.errors import ConfigError, InputError, ModelLoadError
from dataplan.evaluation.metrics import exact_match
from dataplan.io import read_parquet, versions, write_jsonl, write_parquet
from dataplan.maths.forecast import Calibration, Forecast, forecast, normalise_target
from dataplan.models.lora import LoraSettings
from dataplan.workflows.coslow import CosLowResult, coslow
from dataplan.workflows.run_folder import RunFolder

log = logging.getLogger(__name__)

CONFIDENCES = "confidences.parquet"
CHOSEN = "chosen.jsonl"
RESULT = "result.json"
CURVE_PNG = "curve.png"


@dataclass
class EstimateConfig:
    """Settings of ``dataplan estimate``. Invalid values fail here, before any model loads."""

    model: str
    data: str | None = None
    task: str | None = None
    labeled: str | None = None
    annotate_out: str | None = None
    run_dir: str | None = None
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    id_field: str = "id"
    split: str | None = None
    max_pool: int | None = None
    chat_template: bool = True
    system_prompt: str | None = None
    confidence_measure: str = "confidence"
    low_fraction: float = 0.1
    n_labeled: int = 32
    seed: int = 0
    max_new_tokens: int = 30
    generation_batch_size: int = 64
    gradient_batch_size: int = 8
    lora_r: int = 64
    lora_alpha: float = 32.0
    lora_targets: str = "all-linear"
    adapter: str | None = None
    adapter_seeds: tuple[int, ...] = (0,)
    gradient_space: str = "lora"
    random_baseline: bool = True
    calibration: str | None = None
    coef: float | None = None
    intercept: float | None = None
    n_max: int | None = None
    target: float | None = None
    target_accuracy: float | None = None
    zero_shot_accuracy: float | None = None
    ceiling: float = 1.0
    interval: float = 0.8
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if (self.data is None) == (self.task is None):
            raise ConfigError("give exactly one of --data FILE or --task NAME")
        if self.confidence_measure not in ("confidence", "perplexity"):
            raise ConfigError("--confidence must be 'confidence' or 'perplexity'")
        if not 0.0 < self.low_fraction <= 1.0:
            raise ConfigError(f"--low-fraction must be in (0, 1], got {self.low_fraction}")
        if self.n_labeled < 2:
            raise ConfigError(f"--n-labeled must be at least 2, got {self.n_labeled}")
        if self.max_pool is not None and self.max_pool < 1:
            raise ConfigError("--max-pool must be positive")
        for name in ("max_new_tokens", "generation_batch_size", "gradient_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        if not self.adapter_seeds:
            raise ConfigError("--adapter-seeds needs at least one seed")
        if self.target is not None and not 0.0 < self.target < 1.0:
            raise ConfigError(f"--target is a normalised target in (0, 1), got {self.target}")
        if self.target is not None and self.target_accuracy is not None:
            raise ConfigError("give --target or --target-accuracy, not both")
        if (self.coef is None) != (self.intercept is None):
            raise ConfigError("--coef and --intercept go together")
        if self.coef is not None and self.calibration is not None:
            raise ConfigError("give --calibration or --coef/--intercept, not both")
        if not 0.0 < self.interval < 1.0:
            raise ConfigError("--interval must be in (0, 1)")
        if self.n_max is not None and self.n_max < 2:
            raise ConfigError(f"--n-max must be at least 2, got {self.n_max}")
        for name in ("coef", "intercept", "ceiling"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"--{name} must be a finite number")
        if self.annotate_out is not None and not self.annotate_out.endswith(".jsonl"):
            raise ConfigError(
                f"{self.annotate_out}: --annotate-out writes JSONL; give a .jsonl path"
            )
        if self.gradient_space not in ("lora", "frozen"):
            raise ConfigError("--gradient-space must be lora or frozen")
        LoraSettings(r=self.lora_r, alpha=self.lora_alpha)  # validates

    def lora(self, seed: int) -> LoraSettings:
        targets: str | tuple[str, ...] = self.lora_targets
        if targets != "all-linear":
            targets = tuple(t.strip() for t in self.lora_targets.split(",") if t.strip())
        return LoraSettings(r=self.lora_r, alpha=self.lora_alpha, target_modules=targets, seed=seed)

    def compute_settings(self, data_digest: str) -> dict[str, Any]:
        """The settings that determine the cached steps (the run folder's identity)."""
        keys = [
            "model",
            "prompt_field",
            "answer_field",
            "id_field",
            "split",
            "max_pool",
            "chat_template",
            "system_prompt",
            "confidence_measure",
            "low_fraction",
            "n_labeled",
            "seed",
            "max_new_tokens",
            "lora_r",
            "lora_alpha",
            "lora_targets",
            "adapter",
            "task",
        ]
        from dataplan.models.loading import model_identity

        d = {k: getattr(self, k) for k in keys}
        d["model"] = model_identity(self.model)
        d["data"] = None if self.data is None else str(Path(self.data).resolve())
        d["data_sha256"] = data_digest
        from dataplan.models.device import resolve_device, resolve_dtype

        d["dtype_resolved"] = str(resolve_dtype(self.dtype, resolve_device(self.device)))
        if self.adapter is not None:
            d["adapter"] = str(Path(self.adapter).resolve())
        return d


@dataclass
class EstimateResult:
    """Everything ``estimate`` reports; :meth:`to_dict` is the ``--json`` output."""

    cos_low: float
    cos_low_per_seed: list[float]
    baselines: dict[str, float | None]
    n_pool: int
    n_low: int
    chosen_ids: list[str]
    zero_shot_accuracy: float | None
    forecast: Forecast | None
    note: str | None
    run_dir: str
    model: dict[str, Any]
    config: dict[str, Any]
    timings: dict[str, float]
    status: str = "ok"
    annotate_out: str | None = None
    compute_seconds: dict[str, float] = field(default_factory=dict)  # when each step ran

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["forecast"] = None if self.forecast is None else self.forecast.to_dict()
        d["versions"] = versions()
        return d


def load_pool(cfg: EstimateConfig) -> tuple[list[Example], str, str]:
    """The pool's examples, a digest of its source, and a label for messages."""
    if cfg.task is not None:
        from dataplan.tasks.registry import get_task, load_task

        spec = get_task(cfg.task)
        examples = load_task(cfg.task)
        # The examples' content, not just the task's name: a change in how the suite formats
        # a task (e.g. options shown in the prompt) must not reuse a stale run folder.
        digest = task_digest(spec.name, spec.path, examples)
        label = f"task {spec.name}"
    else:
        path = Path(cfg.data)  # type: ignore[arg-type]
        fields = Fields(cfg.prompt_field, cfg.answer_field, cfg.id_field)
        examples = load_examples(path, fields=fields, split=cfg.split)
        digest = file_digest(path)
        label = str(path)
    if cfg.max_pool is not None and len(examples) > cfg.max_pool:
        rng = np.random.default_rng([cfg.seed, 2])
        keep = np.sort(rng.choice(len(examples), size=cfg.max_pool, replace=False))
        examples = [examples[i] for i in keep]
    return examples, digest, label


def resolve_calibration(cfg: EstimateConfig) -> Calibration | None:
    if cfg.coef is not None:
        return Calibration(
            name="custom", coef=cfg.coef, intercept=cfg.intercept, n_max=cfg.n_max or 5000
        )  # type: ignore[arg-type]
    if cfg.calibration is not None:
        return get_calibration(cfg.calibration)
    if has_calibration(cfg.model):
        return get_calibration(cfg.model)
    return None


def _pool_scores(run: RunFolder, cfg: EstimateConfig, loaded, formatter, pool: list[Example]):
    """Per-example confidence of the pool, computed once and cached."""
    from dataplan.compute.generation import GreedyAnswers, greedy_answers

    ids = [ex.id for ex in pool]
    if run.has(CONFIDENCES):
        cols = read_parquet(run.file(CONFIDENCES))
        if cols["id"] == ids:
            log.info("reusing cached pool confidences (%s)", run.file(CONFIDENCES))
            return GreedyAnswers(
                confidence=np.asarray(cols["confidence"]),
                perplexity=np.asarray(cols["perplexity"]),
                n_tokens=np.asarray(cols["n_tokens"]),
                generated=list(cols["generated"]),
            )
        log.warning("cached confidences do not match the pool; recomputing")
    prompt_ids = formatter.generation_prompts(pool, cfg.max_new_tokens)
    start = time.perf_counter()
    result = greedy_answers(
        loaded.model,
        loaded.tokenizer,
        prompt_ids,
        batch_size=cfg.generation_batch_size,
        max_new_tokens=cfg.max_new_tokens,
        progress=cfg.progress,
        desc="confidence",
    )
    run.record_seconds("confidence", time.perf_counter() - start)
    write_parquet(
        run.file(CONFIDENCES),
        {
            "id": ids,
            "confidence": result.confidence,
            "perplexity": result.perplexity,
            "n_tokens": result.n_tokens,
            "generated": result.generated,
        },
    )
    return result


def _cached_coslow(
    run: RunFolder, loaded, formatter, examples, cfg: EstimateConfig, seed: int, kind: str
) -> CosLowResult:
    """CoS of ``examples`` for one adapter seed, with the Gram matrix cached by content."""
    from safetensors.numpy import load_file, save_file

    from dataplan.io import atomic_path

    name = f"gradients-{kind}-{examples_key(examples)}-seed{seed}.safetensors"
    if cfg.gradient_space == "frozen":  # seed-free: one Gram whatever the adapter seed
        name = f"gradients-{kind}-{examples_key(examples)}-frozen.safetensors"
    if cfg.adapter is not None:
        name = f"gradients-{kind}-{examples_key(examples)}-adapter.safetensors"
    ids = [ex.id for ex in examples]
    if run.has(name):
        from safetensors import safe_open

        with safe_open(str(run.file(name)), "np") as fh:
            meta = fh.metadata()
        tensors = load_file(str(run.file(name)))
        log.info("reusing cached gradients (%s)", name)
        return CosLowResult.from_gram(tensors["gram"], ids, meta["adapter"], int(meta["n_params"]))
    start = time.perf_counter()
    res = coslow(
        loaded,
        examples,
        lora=cfg.lora(seed),
        adapter=cfg.adapter,
        formatter=formatter,
        batch_size=cfg.gradient_batch_size,
        space=cfg.gradient_space,
        progress=cfg.progress,
    )
    run.record_seconds(name.removesuffix(".safetensors"), time.perf_counter() - start)
    with atomic_path(run.file(name)) as tmp:
        save_file(
            {"gram": res.gram},
            str(tmp),
            metadata={"adapter": res.adapter, "n_params": str(res.n_params)},
        )
    return res


def _labelled_chosen(chosen: list[Example], labelled: list[Example] | None) -> list[Example] | None:
    """The chosen examples with answers: ``--labeled``'s, else the pool's; None if neither."""
    if labelled is not None:
        chosen_ids = {ex.id for ex in chosen}
        outside = [ex.id for ex in labelled if ex.id not in chosen_ids]
        if outside:
            log.warning(
                "%d labelled example(s) are not among this run's low-confidence choice (e.g. id %s)",
                len(outside),
                outside[0],
            )
        return labelled
    if all(ex.answer is not None for ex in chosen):
        return chosen
    return None


def estimate(cfg: EstimateConfig, loaded=None) -> EstimateResult:
    """Run ``dataplan estimate`` (see module docstring). ``loaded`` reuses a loaded model."""
    from dataplan.maths.confidence import lowest_confidence
    from dataplan.models.loading import load_model

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    pool, digest, label = load_pool(cfg)
    n_low = math.floor(cfg.low_fraction * len(pool) + 1e-9)
    if n_low < cfg.n_labeled:
        raise InputError(
            f"a pool of {len(pool)} examples has {n_low} in its lowest {cfg.low_fraction:.0%}, "
            f"fewer than the {cfg.n_labeled} to label; give at least "
            f"{math.ceil(cfg.n_labeled / cfg.low_fraction)} examples or raise --low-fraction",
            path=label,
        )
    labelled_pool = all(ex.answer is not None for ex in pool)
    if not labelled_pool and cfg.labeled is None and cfg.annotate_out is None:
        raise InputError(
            "the pool has examples without answers: pass --annotate-out FILE to write the "
            f"{cfg.n_labeled} examples to label, then --labeled FILE",
            path=label,
            field=cfg.answer_field,
        )
    labelled_file = None
    if cfg.labeled is not None:  # read (and fail on a bad file) before any model work
        labelled_file = load_examples(
            cfg.labeled,
            fields=Fields(cfg.prompt_field, cfg.answer_field, cfg.id_field),
            require_answer=True,
        )
    if cfg.adapter is not None and not (Path(cfg.adapter) / "adapter_config.json").exists():
        raise ModelLoadError(f"{cfg.adapter}: not a PEFT adapter folder (no adapter_config.json)")
    calibration = resolve_calibration(cfg)
    if cfg.run_dir is None:
        cfg.run_dir = str(Path("runs") / f"estimate-{time.strftime('%Y%m%d-%H%M%S')}")
    run = RunFolder(cfg.run_dir, cfg.compute_settings(digest))
    run.check()
    log.info("run folder %s (rerun with --run-dir %s to resume)", run.path, run.path)
    timings["load_data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if loaded is None:
        loaded = load_model(
            cfg.model, device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code
        )
    formatter = PromptFormatter(
        loaded.tokenizer, use_chat_template=cfg.chat_template, system_prompt=cfg.system_prompt
    )
    timings["load_model"] = time.perf_counter() - t0
    run.open()

    t0 = time.perf_counter()
    conf = _pool_scores(run, cfg, loaded, formatter, pool)
    timings["confidence"] = time.perf_counter() - t0
    scores = conf.score(cfg.confidence_measure)
    low, chosen_idx = lowest_confidence(scores, cfg.low_fraction, k=cfg.n_labeled, seed=cfg.seed)
    chosen = [pool[i] for i in chosen_idx]
    write_jsonl(
        run.file(CHOSEN),
        [
            {
                **ex.to_record(),
                "confidence": float(conf.confidence[i]),
                "perplexity": float(conf.perplexity[i]),
                "model_answer": conf.generated[i],
            }
            for ex, i in zip(chosen, chosen_idx, strict=True)
        ],
    )
    zero_shot = cfg.zero_shot_accuracy
    if zero_shot is None and labelled_pool:
        zero_shot = float(
            np.mean([exact_match(g, ex.answer) for g, ex in zip(conf.generated, pool, strict=True)])
        )

    labelled = _labelled_chosen(chosen, labelled_file)
    if labelled is None:
        assert cfg.annotate_out is not None
        write_jsonl(
            cfg.annotate_out,
            [
                {cfg.id_field: ex.id, cfg.prompt_field: ex.prompt, cfg.answer_field: None}
                for ex in chosen
            ],
        )
        return EstimateResult(
            cos_low=float("nan"),
            cos_low_per_seed=[],
            baselines={},
            n_pool=len(pool),
            n_low=len(low),
            chosen_ids=[ex.id for ex in chosen],
            zero_shot_accuracy=None,
            forecast=None,
            note=f"wrote {len(chosen)} low-confidence examples to {cfg.annotate_out}: fill in "
            f"'{cfg.answer_field}' and rerun with --labeled {cfg.annotate_out} --run-dir {run.path}",
            run_dir=str(run.path),
            model=loaded.describe(),
            config=asdict(cfg),
            timings=timings,
            compute_seconds=run.compute_seconds(),
            status="needs_labels",
            annotate_out=cfg.annotate_out,
        )

    t0 = time.perf_counter()
    seeds = (
        (None,) if cfg.adapter is not None or cfg.gradient_space == "frozen" else cfg.adapter_seeds
    )
    results = [_cached_coslow(run, loaded, formatter, labelled, cfg, s or 0, "low") for s in seeds]
    per_seed = [r.coslow for r in results]
    cos_low = float(np.mean(per_seed))
    timings["gradients"] = time.perf_counter() - t0

    baselines: dict[str, float | None] = {
        "mean_grad_norm": float(np.mean([r.grad_norms.mean() for r in results])),
        "mean_confidence_pool": float(np.mean(conf.confidence)),
        "mean_confidence_low": float(np.mean(conf.confidence[low])),
        "cos_random": None,
        "cos_low_std_over_seeds": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None,
    }
    if cfg.random_baseline and labelled_pool and len(pool) >= cfg.n_labeled:
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, 1])
        rand_idx = np.sort(rng.choice(len(pool), size=len(labelled), replace=False))
        rand = _cached_coslow(
            run, loaded, formatter, [pool[i] for i in rand_idx], cfg, seeds[0] or 0, "random"
        )
        baselines["cos_random"] = rand.coslow
        timings["gradients_random"] = time.perf_counter() - t0

    fc, note = None, None
    if calibration is None:
        note = (
            f"no calibration for model {cfg.model!r} yet: CoS-Low is reported, but turning it into a "
            "data budget needs one (--calibration NAME|FILE, or --coef/--intercept)"
        )
    else:
        tau = cfg.target
        if cfg.target_accuracy is not None:
            if zero_shot is None:
                note = "--target-accuracy needs --zero-shot-accuracy for an unlabelled pool"
            else:
                tau = (
                    normalise_target(cfg.target_accuracy, zero_shot, cfg.ceiling)
                    if cfg.ceiling > zero_shot
                    else float("nan")
                )
                if not 0.0 < tau < 1.0:
                    note = (
                        f"target accuracy {cfg.target_accuracy} is {tau:.3f} on the normalised scale "
                        f"(zero-shot {zero_shot:.3f}, ceiling {cfg.ceiling}); it must lie strictly between"
                    )
                    tau = None
        if tau is None and note is None:
            tau = 0.9
            note = "no target given: forecast for the normalised target 0.9"
        if tau is not None:
            fc = forecast(cos_low, calibration, tau, n_max=cfg.n_max, level=cfg.interval)
            _plot_curve(run.file(CURVE_PNG), fc, cfg.model, label, zero_shot, cfg.ceiling)

    result = EstimateResult(
        cos_low=cos_low,
        cos_low_per_seed=per_seed,
        baselines=baselines,
        n_pool=len(pool),
        n_low=len(low),
        chosen_ids=[ex.id for ex in labelled],
        zero_shot_accuracy=zero_shot,
        forecast=fc,
        note=note,
        run_dir=str(run.path),
        model=loaded.describe(),
        config=asdict(cfg),
        timings=timings,
        compute_seconds=run.compute_seconds(),
    )
    out = result.to_dict()
    out["cosines"] = results[0].cosines.tolist()
    out["grad_norms"] = results[0].grad_norms.tolist()
    run.write_json(RESULT, out)
    return result


def _plot_curve(
    path: Path, fc: Forecast, model: str, label: str, zero_shot: float | None, ceiling: float
) -> None:
    """Predicted normalised curve (log budget axis) with the target and n* marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dataplan.io import save_figure
    from dataplan.maths.forecast import predicted_curve

    n = np.unique(np.round(np.logspace(0, np.log10(fc.n_max), 200)))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if fc.auc_interval is not None:
        lo = predicted_curve(fc.auc_interval[0], n, fc.n_max)
        hi = predicted_curve(fc.auc_interval[1], n, fc.n_max)
        ax.fill_between(n, lo, hi, alpha=0.2, label=f"{fc.interval_level:.0%} interval")
    ax.plot(n, predicted_curve(fc.auc, n, fc.n_max), lw=2, label=f"predicted (AUC' = {fc.auc:.3f})")
    ax.axhline(fc.target, color="grey", ls="--", lw=1, label=f"target τ = {fc.target:.2f}")
    ax.axvline(fc.n_star, color="C3", ls=":", lw=1.5, label=f"n* ≈ {fc.n_star:,.0f}")
    ax.set_xscale("log", base=2)
    ax.set_xlim(1, fc.n_max)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel("normalised performance (0 = zero-shot, 1 = ceiling)")
    title = f"{model} on {Path(label).name}: CoS-Low {fc.cos_low:.3f}, calibration {fc.calibration}"
    ax.set_title(title, fontsize=9)
    if zero_shot is not None and ceiling > zero_shot:
        sec = ax.secondary_yaxis(
            "right",
            functions=(
                lambda y: zero_shot + y * (ceiling - zero_shot),
                lambda a: (a - zero_shot) / (ceiling - zero_shot),
            ),
        )
        sec.set_ylabel("accuracy")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)
