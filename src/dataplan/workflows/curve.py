"""``dataplan curve``: measure a task's data-efficiency curve by fine-tuning at several budgets.

For every (budget n, seed s) the model is fine-tuned on the first n examples of a seeded
permutation of the training pool (so the subsets are nested across budgets [our choice]) and
evaluated on the held-out test set:

- ``exact_match`` of the cleaned greedy answer (the paper's metric),
- ``token_f1`` of the same answer (free text),
- ``loglik_accuracy``: the option with the highest log-likelihood, for tasks with options,
- ``prediction_majority_share``: share of the most common prediction (1.0 = collapsed).

Every (model, data, budget, seed, settings) result is one JSON file in the cache, written
atomically, so an interrupted curve resumes where it stopped. The curve is written in the
paper's result format (``{"<n>": {"<metric>": mean over seeds}}``) with its AUC
(``dataplan.maths.auc`` with the curve's own grid, n_max = the largest budget), the
always-majority-label baseline and a PNG.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataplan.data.formatting import PromptFormatter
from dataplan.data.loading import Example, load_examples
from dataplan.data.scoring import (
    exact_match_accuracy,
    majority_baseline,
    majority_share,
    mean_token_f1,
)
from dataplan.digests import examples_digest, json_digest
from dataplan.errors import ConfigError
from dataplan.io import write_json
from dataplan.maths.auc import data_efficiency_auc
from dataplan.models.builtin import cache_dir

log = logging.getLogger(__name__)

METRICS = ("exact_match", "token_f1", "loglik_accuracy")


@dataclass
class CurveConfig:
    """Settings of ``dataplan curve``; invalid values fail before any model loads."""

    model: str
    task: str | None = None
    data: str | None = None
    test_data: str | None = None
    budgets: tuple[int, ...] = (0, 16, 32, 64, 128, 256, 512, 1024)
    seeds: tuple[int, ...] = (0,)
    train: Any = None  # TrainSettings
    max_test: int | None = None
    max_new_tokens: int = 16
    eval_batch_size: int = 64
    chat_template: bool = True
    system_prompt: str | None = None
    out_dir: str | None = None
    cache: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        from dataplan.compute.training import TrainSettings

        if (self.data is None) == (self.task is None):
            raise ConfigError("give exactly one of --data FILE or --task NAME")
        if self.test_data is not None and self.data is None:
            raise ConfigError("--test-data goes with --data")
        if not self.budgets or any(b < 0 for b in self.budgets):
            raise ConfigError("budgets must be non-negative integers")
        if not any(b > 0 for b in self.budgets):
            raise ConfigError("give at least one positive budget")
        if not self.seeds:
            raise ConfigError("give at least one seed")
        if self.max_test is not None and self.max_test < 1:
            raise ConfigError("--max-test must be positive")
        self.budgets = tuple(sorted(set(self.budgets)))
        if self.train is None:
            self.train = TrainSettings()


def load_splits(cfg: CurveConfig) -> tuple[list[Example], list[Example], str]:
    """(training pool, test set, label) of a built-in task or a data file."""
    if cfg.task is not None:
        from dataplan.tasks.registry import get_task, load_task

        spec = get_task(cfg.task)
        pool, test, label = load_task(spec.name, "pool"), load_task(spec.name, "test"), spec.name
    else:
        examples = load_examples(cfg.data, require_answer=True)  # type: ignore[arg-type]
        label = Path(cfg.data).stem  # type: ignore[arg-type]
        if cfg.test_data is not None:
            pool, test = examples, load_examples(cfg.test_data, require_answer=True)
        else:
            order = np.random.default_rng(0).permutation(len(examples))
            n_test = min(300, len(examples) // 2)
            test = [examples[i] for i in order[:n_test]]
            pool = [examples[i] for i in order[n_test:]]
    if cfg.max_test is not None:
        test = test[: cfg.max_test]
    too_big = [b for b in cfg.budgets if b > len(pool)]
    if too_big:
        raise ConfigError(
            f"budget {too_big[0]} exceeds the training pool of {len(pool)} examples of {label}"
        )
    return pool, test, label


def training_subset(pool: list[Example], n: int, seed: int) -> list[Example]:
    """The first n of a seeded permutation: nested across budgets for one seed."""
    order = np.random.default_rng([seed, 3]).permutation(len(pool))
    return [pool[i] for i in order[:n]]


def evaluate(
    loaded, formatter: PromptFormatter, test: list[Example], cfg: CurveConfig, model=None
) -> dict[str, Any]:
    """Greedy-answer metrics and option log-likelihood accuracy on the test set."""
    from dataplan.compute.confidence import pool_confidence
    from dataplan.compute.option_scoring import option_predictions

    model = model if model is not None else loaded.model
    prompt_ids = formatter.generation_prompts(test, cfg.max_new_tokens)
    gen = pool_confidence(
        model,
        loaded.tokenizer,
        prompt_ids,
        batch_size=cfg.eval_batch_size,
        max_new_tokens=cfg.max_new_tokens,
        progress=False,
    )
    refs = [e.answer for e in test]
    out: dict[str, Any] = {
        "exact_match": exact_match_accuracy(gen.generated, refs),
        "token_f1": mean_token_f1(gen.generated, refs),
        "prediction_majority_share": majority_share(gen.generated),
        "loglik_accuracy": None,
        "examples": [
            {"id": e.id, "prediction": g}
            for e, g in zip(test[:20], gen.generated[:20], strict=False)
        ],
    }
    if all(e.choices for e in test):
        preds = option_predictions(model, formatter, test, loaded.tokenizer.pad_token_id)
        out["loglik_accuracy"] = exact_match_accuracy(preds, refs)
        out["loglik_majority_share"] = majority_share(preds)
    return out


def train_and_evaluate(
    loaded,
    formatter,
    subset: list[Example],
    test: list[Example],
    cfg: CurveConfig,
    seed: int,
    train=None,
) -> dict[str, Any]:
    """Fine-tune a copy of the model on ``subset`` (none: zero-shot) and evaluate on ``test``.

    LoRA adapters are removed afterwards; full fine-tuning works on a freshly loaded copy.
    ``train`` overrides ``cfg.train`` (e.g. a compute-bounded step count).
    """
    from dataplan.compute.training import finetune
    from dataplan.workflows.coslow import encode_labelled

    train = train or cfg.train
    start = time.perf_counter()
    train_log: dict[str, Any] | None = None
    model = loaded.model
    if subset:
        if train.method == "full":
            from dataplan.models.loading import load_model

            model = load_model(
                cfg.model,
                device=cfg.device,
                dtype=cfg.dtype,
                trust_remote_code=cfg.trust_remote_code,
            ).model
        encoded = encode_labelled(formatter, subset)
        model, train_log = finetune(model, encoded, loaded.tokenizer.pad_token_id, train, seed=seed)
    try:
        metrics = evaluate(loaded, formatter, test, cfg, model=model)
    finally:
        if subset and train.method == "lora":
            loaded.model = model.unload()
            loaded.model.eval()
    return {
        "seed": seed,
        "n_test": len(test),
        **metrics,
        "train": train_log,
        "seconds": time.perf_counter() - start,
    }


def run_point(loaded, formatter, pool, test, cfg: CurveConfig, n: int, seed: int) -> dict[str, Any]:
    """Fine-tune on the first n examples of the seeded pool order (n = 0: none) and evaluate."""
    subset = training_subset(pool, n, seed) if n > 0 else []
    return {"budget": n, **train_and_evaluate(loaded, formatter, subset, test, cfg, seed)}


def _plot(
    path: Path, label: str, model: str, curve: dict[int, dict[str, float]], majority: float
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dataplan.io import save_figure

    ns = sorted(curve)
    x = [max(n, 1) for n in ns]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for metric in METRICS:
        ys = [curve[n].get(metric) for n in ns]
        if all(y is not None for y in ys):
            ax.plot(x, ys, marker="o", label=metric)
    ax.axhline(majority, color="grey", ls="--", lw=1, label=f"always-majority ({majority:.2f})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training examples (0 plotted at 1)")
    ax.set_ylabel("test performance")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{model} on {label}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)


def point_cache(cfg: CurveConfig) -> Path:
    """Folder of the cached (budget, seed, settings) results."""
    return Path(cfg.cache) if cfg.cache else cache_dir() / "curves"


def point_settings(cfg: CurveConfig, pool: list[Example], test: list[Example]) -> dict[str, Any]:
    """What determines a cached result besides its budget/subset and seed (its cache key)."""
    from dataplan.models.loading import model_identity

    return {
        "model": model_identity(cfg.model),
        "pool": examples_digest(pool),
        "test": examples_digest(test),
        "train": cfg.train.to_dict(),
        "eval": {
            "max_new_tokens": cfg.max_new_tokens,
            "chat_template": cfg.chat_template,
            "system_prompt": cfg.system_prompt,
        },
        "dtype": cfg.dtype,
    }


def measure_curve(cfg: CurveConfig, loaded=None) -> dict[str, Any]:
    """Run (or resume) every (budget, seed) point and write the curve files; returns the summary."""
    from dataplan.models.loading import load_model

    pool, test, label = load_splits(cfg)
    cache = point_cache(cfg)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("runs") / f"curve-{label}"
    settings = point_settings(cfg, pool, test)
    points: dict[tuple[int, int], dict[str, Any]] = {}
    todo = []
    for n in cfg.budgets:
        for seed in cfg.seeds if n > 0 else cfg.seeds[:1]:
            key = {**settings, "budget": n, "seed": seed}
            if n == 0:
                key.pop("train")
            path = cache / f"{label}-n{n}-s{seed}-{json_digest(key)}.json"
            if path.exists():
                points[(n, seed)] = json.loads(path.read_text(encoding="utf-8"))
            else:
                todo.append((n, seed, path, key))
    if todo:
        if loaded is None:
            loaded = load_model(
                cfg.model,
                device=cfg.device,
                dtype=cfg.dtype,
                trust_remote_code=cfg.trust_remote_code,
            )
        formatter = PromptFormatter(
            loaded.tokenizer, use_chat_template=cfg.chat_template, system_prompt=cfg.system_prompt
        )
        from tqdm.auto import tqdm

        for n, seed, path, key in tqdm(todo, desc=f"curve {label}", disable=not cfg.progress):
            result = run_point(loaded, formatter, pool, test, cfg, n, seed)
            result["settings"] = key
            write_json(path, result)
            points[(n, seed)] = result
            log.info(
                "%s n=%d seed=%d: EM %.3f, F1 %.3f, loglik %s",
                label,
                n,
                seed,
                result["exact_match"],
                result["token_f1"],
                result["loglik_accuracy"],
            )
    return summarise(cfg, label, pool, test, points, out_dir)


def summarise(cfg: CurveConfig, label: str, pool, test, points, out_dir: Path) -> dict[str, Any]:
    """Mean over seeds per budget, AUC per metric, majority baseline; writes the curve files."""
    curve: dict[int, dict[str, float]] = {}
    spread: dict[int, dict[str, float]] = {}
    for n in cfg.budgets:
        rows = [p for (b, _), p in points.items() if b == n]
        curve[n], spread[n] = {}, {}
        for metric in (*METRICS, "prediction_majority_share"):
            values = [r[metric] for r in rows if r.get(metric) is not None]
            if values:
                curve[n][metric] = float(np.mean(values))
                spread[n][metric] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    grid = tuple(b for b in cfg.budgets if b > 0)
    aucs = {}
    for metric in METRICS:
        series = {n: v[metric] for n, v in curve.items() if metric in v}
        if 0 in series and len(series) == len(cfg.budgets):
            aucs[metric] = data_efficiency_auc(series, grid=grid)
    maj_label, maj_acc = majority_baseline([e.answer for e in pool], [e.answer for e in test])
    summary = {
        "task": label,
        "model": cfg.model,
        "budgets": list(cfg.budgets),
        "seeds": list(cfg.seeds),
        "n_max": max(grid),
        "n_pool": len(pool),
        "n_test": len(test),
        "auc": aucs,
        "majority_label": maj_label,
        "majority_accuracy": maj_acc,
        "curve": {str(n): v for n, v in curve.items()},
        "spread_over_seeds": {str(n): v for n, v in spread.items()},
        "train": cfg.train.to_dict(),
    }
    write_json(out_dir / "results.json", {str(n): v for n, v in curve.items()})
    write_json(out_dir / "summary.json", summary)
    write_json(out_dir / "points.json", [points[k] for k in sorted(points)])
    _plot(out_dir / "curve.png", label, cfg.model, curve, maj_acc)
    return summary
