"""``dataplan evaluate``: score a model — or a PEFT adapter ``train``, ``curve`` or any PEFT tool
wrote — on labelled test examples with the evaluation core every study uses.

The test set is a suite task's test split (``--task``) or a whole labelled file (``--data``;
a ``datasets`` folder: its ``test`` split when it has one, unless ``--split`` names another);
``--max-test N`` keeps its first N examples. Every metric of
:mod:`dataplan.evaluation.core` is reported, and the headline one — the metric that measures the
task (:func:`dataplan.evaluation.metrics.headline_metric`: option log-likelihood accuracy for
classification and multiple choice, else the task's own) — is named.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataplan.errors import ConfigError
from dataplan.options import DataOptions, ModelOptions, PromptOptions, RunOptions


@dataclass(kw_only=True)
class EvaluateConfig(ModelOptions, DataOptions, PromptOptions, RunOptions):
    """Settings of ``dataplan evaluate``.

    Attributes:
        adapter: A PEFT adapter folder to evaluate on top of --model (what `dataplan train`
            writes); default: the model alone.
        max_test: Evaluate on the first N test examples only.
        max_new_tokens: Longest generated answer.
        batch_size: Prompts generated together.
        options: Score the options (log-likelihood accuracy) when every example has them.
    """

    adapter: str | None = None
    max_test: int | None = None
    max_new_tokens: int = 16
    batch_size: int = 64
    options: bool = True

    def __post_init__(self) -> None:
        self.source  # noqa: B018 - exactly one of --task / --data
        if self.task is not None and self.split is not None:
            raise ConfigError(
                "--split chooses a split of a --data datasets folder; a --task "
                "is evaluated on its test split"
            )
        if self.data is not None and self.split is None:
            self.split = _test_split(Path(self.data))
        if self.max_test is not None and self.max_test < 1:
            raise ConfigError(f"--max-test must be positive, got {self.max_test}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError("--max-new-tokens and --batch-size must be positive")
        if self.adapter is not None and not (Path(self.adapter) / "adapter_config.json").exists():
            raise ConfigError(f"--adapter {self.adapter}: not a PEFT adapter folder")


def _test_split(folder: Path) -> str | None:
    """``test`` for a ``datasets`` folder (save_to_disk of a DatasetDict) that has that split:
    evaluating on the loader's default (``train``) would score the training data."""
    index = folder / "dataset_dict.json"
    if not index.is_file():
        return None
    try:
        splits = json.loads(index.read_text(encoding="utf-8")).get("splits") or []
    except (OSError, ValueError, AttributeError):
        return None  # the loader reports a broken folder, naming it
    return "test" if "test" in splits else None


def test_examples(cfg: EvaluateConfig) -> list[Any]:
    """A task's test split, or the labelled file (a datasets folder: its test split); the first
    ``max_test``."""
    if cfg.task is not None:
        from dataplan.tasks.registry import load_task

        examples = load_task(cfg.task, "test")
    else:  # the loader refuses an empty file, naming it
        examples = cfg.source.load(require_answer=True)
    return examples[: cfg.max_test] if cfg.max_test is not None else examples


def evaluate_model(cfg: EvaluateConfig, loaded: Any | None = None) -> dict[str, Any]:
    """Every metric of the evaluation core for the model (with ``cfg.adapter``) on the test set,
    the headline metric named, and what was evaluated."""
    from dataplan.compute.distributed import local_device
    from dataplan.evaluation import EvalSettings, evaluate, headline_metric

    if loaded is None:
        cfg.check_model()
    test = test_examples(cfg)  # bad data fails before the model loads
    loaded = loaded or cfg.spec.load(device=local_device(cfg.device))
    model = loaded.model
    peft_model = None
    if cfg.adapter is not None:  # wraps the model in place: a caller's model comes back unwrapped
        from dataplan.models.lora import load_adapter

        model = peft_model = load_adapter(model, cfg.adapter)
    formatter = cfg.prompts.formatter(loaded.tokenizer)
    settings = EvalSettings(
        max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, options=cfg.options
    )
    start = time.perf_counter()
    try:
        metrics = evaluate(model, formatter, test, settings, progress=cfg.progress)
    finally:
        if peft_model is not None:
            peft_model.unload()  # peft: the base model without the adapter's layers
    task_metric, kind = cfg.source.task_kind()
    available = {k: v for k, v in metrics.items() if isinstance(v, float)}
    headline = headline_metric(available, task_metric, kind)
    return {
        "model": cfg.model,
        "adapter": cfg.adapter,
        "data": cfg.source.label,
        "n": len(test),
        "headline": headline,
        "score": metrics.get(headline),
        **metrics,
        "seconds": round(time.perf_counter() - start, 3),
    }
