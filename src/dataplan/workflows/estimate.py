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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from dataplan.compute.distributed import broadcast, is_main, run_sharded, sharded_pass
from dataplan.data.formatting import PromptFormatter, label_exclusions
from dataplan.data.loading import Example, Fields, load_examples
from dataplan.digests import examples_key, file_digest, task_digest
from dataplan.errors import ConfigError, InputError, ModelLoadError
from dataplan.evaluation.metrics import exact_match
from dataplan.io import read_parquet, versions, write_jsonl, write_parquet
from dataplan.maths.forecast import Forecast
from dataplan.plots import plot_forecast
from dataplan.store import ResultStore
from dataplan.workflows.coslow import CosLowResult, coslow
from dataplan.workflows.estimate_config import EstimateConfig
from dataplan.workflows.forecasting import CosLowCalibration, resolve_target
from dataplan.workflows.run_folder import RunFolder

if TYPE_CHECKING:
    from dataplan.compute.generation import GreedyAnswers
    from dataplan.models.loading import LoadedModel

log = logging.getLogger(__name__)

CONFIDENCES = "confidences.parquet"
CHOSEN = "chosen.jsonl"
RESULT = "result.json"
CURVE_PNG = "curve.png"


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
    probe: dict[str, Any] | None = None  # estimate --probe: what was spent and what it bought
    tokenization: dict[str, Any] | None = None  # how CoS-Low tokenised, and whether it matters

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["forecast"] = None if self.forecast is None else self.forecast.to_dict()
        d["versions"] = versions()
        return d


def _tokenization_report(
    cfg: EstimateConfig,
    calibration: Any,
    formatter: PromptFormatter,
    labelled: Sequence[Example],
) -> dict[str, Any]:
    """The convention CoS-Low used, the calibration's, and — when the examples tokenise apart
    under the two — a warning (docs/methods.md §2.3)."""
    from dataplan.data.formatting import tokenization_differences

    used = cfg.tokenization or "split"
    exclude = label_exclusions(cfg.model)
    differ = tokenization_differences(formatter, labelled, exclude)
    fitted = None if calibration is None else calibration.tokenization
    report: dict[str, Any] = {
        "convention": used,
        "label_exclusions": list(exclude) if used == "joint" else [],
        "calibration_convention": fitted,
        "examples_that_differ": len(differ),
    }
    if differ:
        other = "joint" if used == "split" else "split"
        report["warning"] = (
            f"{len(differ)} of {len(labelled)} labelled examples tokenise differently under "
            f"split and joint (a token straddles the prompt/answer boundary): this CoS-Low "
            f"({used}) differs from the {other} one"
            + (
                f", and the calibration was fitted {fitted}: the forecast does not apply"
                if fitted is not None and fitted != used
                else ""
            )
        )
    return report


def _resolve_probe_calibration(cfg: EstimateConfig, calibration: Any) -> None:
    """Without --probe-calibration, the probe calibration shipped under the CoS-Low
    calibration's name (if any); then load it, so that a bad file fails before any model work.

    Raises:
        ConfigError: probe depths (``--probe 16,32``) with no probe calibration to read them.
    """
    from dataplan.calibrations import shipped_probe_calibrations
    from dataplan.workflows.estimate_probe import parse_probe
    from dataplan.workflows.probe import load_probe_calibration

    if (
        cfg.probe_calibration is None
        and calibration is not None
        and calibration.name in shipped_probe_calibrations()
    ):
        cfg.probe_calibration = calibration.name
    if cfg.probe_calibration is None:
        if isinstance(parse_probe(cfg.probe), tuple):
            shipped = ", ".join(shipped_probe_calibrations()) or "none"
            raise ConfigError(
                f"--probe {cfg.probe}: no probe calibration for {cfg.model!r} to turn probes "
                f"into a forecast; give --probe-calibration NAME|FILE (shipped: {shipped}; "
                "or write one with calibrate --probe-steps)"
            )
        return
    load_probe_calibration(cfg.probe_calibration)


def _probe(
    cfg: EstimateConfig,
    calibration: Any,
    fc: Forecast | None,
    run: Any,
    loaded: Any,
    labelled_file: str | None,
    label: str,
) -> dict[str, Any]:
    """``--probe``: the report of :func:`dataplan.workflows.estimate_probe.probe_and_combine`,
    or why nothing ran."""
    from dataplan.workflows.estimate_probe import probe_and_combine
    from dataplan.workflows.probe import (
        PHASE_PNG,
        draw_phase,
        load_probe_calibration,
        phase_point,
    )

    if cfg.probe_calibration is None:
        return {
            "mode": cfg.probe,
            "skipped": f"no probe calibration for {cfg.model!r} (--probe-calibration NAME|FILE, "
            "from calibrate --probe-steps)",
        }
    probe_cal = load_probe_calibration(cfg.probe_calibration)
    std = None if calibration is None else calibration.residual_std
    report = probe_and_combine(
        cfg,
        probe_cal,
        None if fc is None else fc.auc,
        None if std is None else std**2,
        None if fc is None else fc.target,
        fc.n_max if fc is not None else (cfg.n_max or 5000),
        run.path,
        labelled_file,
        loaded,
    )
    point = phase_point(report, probe_cal)
    if point is not None:
        report["phase_point"] = point
        if is_main():
            draw_phase(run.file(PHASE_PNG), probe_cal, point, label)
    return report


def load_pool(cfg: EstimateConfig) -> tuple[list[Example], str, str]:
    """The pool's examples, a digest of its source, and a label for messages."""
    source = cfg.source
    examples = source.load()
    if cfg.task is not None:
        from dataplan.tasks.registry import get_task

        spec = get_task(cfg.task)
        # The examples' content, not just the task's name: a change in how the suite formats
        # a task (e.g. options shown in the prompt) must not reuse a stale run folder.
        digest = task_digest(spec.name, spec.path, examples)
        label = f"task {spec.name}"
    else:
        digest = file_digest(Path(cfg.data or ""))
        label = str(cfg.data)
    if cfg.max_pool is not None and len(examples) > cfg.max_pool:
        rng = np.random.default_rng([cfg.seed, 2])
        keep = np.sort(rng.choice(len(examples), size=cfg.max_pool, replace=False))
        examples = [examples[i] for i in keep]
    return examples, digest, label


def _pool_scores(
    run: RunFolder,
    cfg: EstimateConfig,
    loaded: LoadedModel,
    formatter: PromptFormatter,
    pool: list[Example],
) -> GreedyAnswers:
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

    n_shards = -(-len(pool) // cfg.shard_size)

    def shard(i: int, r: range) -> dict[str, Any]:
        answers = greedy_answers(
            loaded.model,
            loaded.tokenizer,
            [prompt_ids[j] for j in r],
            batch_size=cfg.generation_batch_size,
            max_new_tokens=cfg.max_new_tokens,
            progress=cfg.progress and is_main(),
            desc="confidence" if n_shards == 1 else f"confidence (shard {i + 1}/{n_shards})",
        )
        return asdict(answers)

    columns = sharded_pass(
        len(pool),
        shard,
        store=ResultStore(run.file("shards")),
        name="confidence",
        shard_size=cfg.shard_size,
    )
    result = GreedyAnswers(**columns)
    if not is_main():
        return result
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
    run: RunFolder,
    loaded: LoadedModel,
    formatter: PromptFormatter,
    examples: Sequence[Example],
    cfg: EstimateConfig,
    seed: int,
    kind: str,
) -> tuple[str, CosLowResult, float | None]:
    """CoS of ``examples`` for one adapter seed, with the Gram matrix cached by content:
    ``(its name in the run folder, the result, seconds if computed now else None)``."""
    key = examples_key(examples) + ("-joint" if cfg.tokenization == "joint" else "")
    name = f"gradients-{kind}-{key}-seed{seed}"
    if cfg.gradient_space == "frozen":  # seed-free: one Gram whatever the adapter seed
        name = f"gradients-{kind}-{key}-frozen"
    if cfg.adapter is not None:
        name = f"gradients-{kind}-{key}-adapter"
    ids = [ex.id for ex in examples]
    store = ResultStore(run.path)
    cached = store.get_arrays(name)
    if cached is not None:
        arrays, meta = cached
        log.info("reusing cached gradients (%s)", name)
        return (
            name,
            CosLowResult.from_gram(arrays["gram"], ids, meta["adapter"], int(meta["n_params"])),
            None,
        )
    start = time.perf_counter()
    res = coslow(
        loaded,
        examples,
        lora=cfg.lora(seed),
        adapter=cfg.adapter,
        formatter=formatter,
        batch_size=cfg.gradient_batch_size,
        max_memory=cfg.memory_budget,
        space=cfg.gradient_space,
        progress=cfg.progress,
        tokenization=cfg.tokenization or "split",
        exclude=label_exclusions(cfg.model),
    )
    seconds = time.perf_counter() - start
    store.put_arrays(
        name, {"gram": res.gram}, {"adapter": res.adapter, "n_params": str(res.n_params)}
    )
    return name, res, seconds


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


def estimate(cfg: EstimateConfig, loaded: LoadedModel | None = None) -> EstimateResult:
    """Run ``dataplan estimate`` (see module docstring). ``loaded`` reuses a loaded model."""
    if loaded is None:
        cfg.check_model()
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
    calibration = cfg.resolve_calibration(cfg.model)
    if cfg.tokenization is None:  # CoS-Low computed as the calibration's was
        cfg.tokenization = calibration.tokenization if calibration is not None else "split"
    if cfg.probe != "off":
        _resolve_probe_calibration(cfg, calibration)
    if cfg.run_dir is None:  # under torchrun: rank 0's time names every rank's folder
        cfg.run_dir = broadcast(str(Path("runs") / f"estimate-{time.strftime('%Y%m%d-%H%M%S')}"))
    run = RunFolder(cfg.run_dir, cfg.compute_settings(digest), defaults=cfg.setting_defaults())
    if is_main():  # fail before loading the model; other ranks check once it is made
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
    run.open_shared()  # under torchrun: rank 0 creates it, the others check it after

    t0 = time.perf_counter()
    conf = _pool_scores(run, cfg, loaded, formatter, pool)
    timings["confidence"] = time.perf_counter() - t0
    scores = conf.score(cfg.confidence_measure)
    low, chosen_idx = lowest_confidence(scores, cfg.low_fraction, k=cfg.n_labeled, seed=cfg.seed)
    chosen = [pool[i] for i in chosen_idx]
    if is_main():
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
        zero_shot = float(  # labelled_pool: every answer is a string
            np.mean(
                [
                    exact_match(g, cast(str, ex.answer))
                    for g, ex in zip(conf.generated, pool, strict=True)
                ]
            )
        )

    labelled = _labelled_chosen(chosen, labelled_file)
    if labelled is None:
        assert cfg.annotate_out is not None
        if is_main():
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
    # One Gram matrix per adapter seed (and one for the random baseline): under torchrun each
    # rank computes its share of them, every rank ends with all.
    jobs: list[tuple[str, list[Example], int]] = [("low", labelled, s or 0) for s in seeds]
    with_random = cfg.random_baseline and labelled_pool and len(pool) >= cfg.n_labeled
    if with_random:
        rng = np.random.default_rng([cfg.seed, 1])
        rand_idx = np.sort(rng.choice(len(pool), size=len(labelled), replace=False))
        jobs.append(("random", [pool[i] for i in rand_idx], seeds[0] or 0))
    done = run_sharded(
        jobs, lambda _, job: _cached_coslow(run, loaded, formatter, job[1], cfg, job[2], job[0])
    )
    if is_main():  # the times of the Gram matrices computed now, whichever rank computed them
        for name, _, seconds in done:
            if seconds is not None:
                run.record_seconds(name, seconds)
    grams = [gram for _, gram, _ in done]
    results = grams[: len(seeds)]
    per_seed = [r.coslow for r in results]
    cos_low = float(np.mean(per_seed))
    timings["gradients"] = time.perf_counter() - t0

    baselines: dict[str, float | None] = {
        "mean_grad_norm": float(np.mean([r.grad_norms.mean() for r in results])),
        "mean_confidence_pool": float(np.mean(conf.confidence)),
        "mean_confidence_low": float(np.mean(conf.confidence[low])),
        "cos_random": grams[-1].coslow if with_random else None,
        "cos_low_std_over_seeds": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None,
    }

    fc, note = None, None
    if calibration is None:
        note = (
            f"no calibration for model {cfg.model!r} yet: CoS-Low is reported, but turning it into a "
            "data budget needs one (--calibration NAME|FILE, or --coef/--intercept)"
        )
    else:
        tau, note, _ = resolve_target(cfg, zero_shot)
        if tau is not None:
            forecaster = CosLowCalibration(calibration)
            fc = forecaster.forecast({"cos_low": cos_low}, tau, n_max=cfg.n_max, level=cfg.interval)
            if is_main():
                plot_forecast(run.file(CURVE_PNG), fc, cfg.model, label, zero_shot, cfg.ceiling)

    tokenization = _tokenization_report(cfg, calibration, formatter, labelled)
    probe = None
    if cfg.probe != "off":  # under torchrun every rank takes part (DDP probes)
        probe = _probe(cfg, calibration, fc, run, loaded, labelled_file=cfg.labeled, label=label)
    result = EstimateResult(
        tokenization=tokenization,
        probe=probe,
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
    if is_main():
        run.write_json(RESULT, out)
    return result
