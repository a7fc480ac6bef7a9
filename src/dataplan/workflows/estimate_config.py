"""Settings of ``dataplan estimate`` (CoS-Low and the data budget it forecasts)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataplan.errors import ConfigError
from dataplan.models.lora import LoraSettings
from dataplan.options import (
    DataOptions,
    MemoryOptions,
    ModelOptions,
    PromptOptions,
    RunOptions,
    cli,
    ints,
)
from dataplan.workflows.forecasting import ForecastOptions


@dataclass(kw_only=True)
class EstimateConfig(
    ModelOptions, DataOptions, PromptOptions, ForecastOptions, MemoryOptions, RunOptions
):
    """Settings of ``dataplan estimate``. Invalid values fail here, before any model loads.

    Attributes:
        labeled: The labelled low-confidence examples (after --annotate-out).
        annotate_out: Write the low-confidence examples to label here (unlabelled pool).
        run_dir: Run folder (default runs/estimate-<time>); rerun to resume.
        max_pool: Use a seeded random subset of at most this many pool examples.
        confidence_measure: Confidence measure: confidence (mean max-token probability) or
            perplexity.
        low_fraction: Share of the pool counted as low confidence.
        n_labeled: Low-confidence examples to label and use.
        seed: Seed of every random choice (recorded).
        max_new_tokens: Longest generated answer.
        generation_batch_size: Prompts generated together.
        shard_size: Pool examples per cached shard of the confidence pass (the unit of resume
            and of torchrun processes).
        gradient_batch_size: Examples per backward pass.
        lora_r: LoRA rank of the gradient adapter.
        lora_alpha: LoRA alpha of the gradient adapter.
        lora_targets: 'all-linear' or comma-separated module names.
        adapter: Existing PEFT adapter folder instead of a fresh adapter.
        adapter_seeds: Seeds of the fresh adapters; CoS-Low is their mean, the spread is reported.
        gradient_space: lora (the paper's fresh-adapter gradients) or frozen (seed-free: gradients
            of the adapted weights).
        random_baseline: Also compute CoS over random pool examples.
        tokenization: How CoS-Low tokenises prompt and answer: split (apart: dataplan's) or joint
            (one string: the CoS-Low authors'); default: the calibration's convention, else split.
        probe: off, auto (probe when the probe calibration says it pays) or probe steps such
            as 16,32: short fine-tunes on the labelled examples, combined with the static
            forecast.
        probe_calibration: The probe calibration, by name or file (probe-calibration.json of
            `calibrate --probe-steps`); default: the one shipped for the model's CoS-Low
            calibration, if any.
        probe_seeds: Probe runs.
        probe_validation: Labelled examples each probe holds out; default: as the probe
            calibration's probes did (8 for a calibration that does not say).
        probe_price: The price of a probe step in forecast variance: --probe auto probes to c*.
    """

    labeled: str | None = None
    annotate_out: str | None = None
    run_dir: str | None = None
    max_pool: int | None = None
    confidence_measure: str = field(default="confidence", metadata=cli(flag="--confidence"))
    low_fraction: float = 0.1
    n_labeled: int = 32
    seed: int = 0
    max_new_tokens: int = 30
    generation_batch_size: int = 64
    shard_size: int = 1024
    gradient_batch_size: int = 8
    lora_r: int = 64
    lora_alpha: float = 32.0
    lora_targets: str = "all-linear"
    adapter: str | None = None
    adapter_seeds: tuple[int, ...] = field(
        default=(0,), metadata=cli(parse=ints("--adapter-seeds"))
    )
    gradient_space: str = "lora"
    random_baseline: bool = True
    tokenization: str | None = None
    probe: str = "off"
    probe_calibration: str | None = None
    probe_seeds: int = 3
    probe_validation: int | None = None
    probe_price: float | None = None

    def __post_init__(self) -> None:
        self.source  # noqa: B018 - exactly one of --data / --task
        from dataplan.workflows.estimate_probe import parse_probe

        if self.tokenization not in (None, "split", "joint"):
            raise ConfigError(f"--tokenization must be split or joint, got {self.tokenization!r}")
        parse_probe(self.probe)
        if self.probe_validation is not None and self.probe_validation < 1:
            raise ConfigError(f"--probe-validation must be at least 1, got {self.probe_validation}")
        if self.probe_seeds < 2:
            raise ConfigError(f"--probe-seeds must be at least 2, got {self.probe_seeds}")
        if self.probe_price is not None and not (
            math.isfinite(self.probe_price) and self.probe_price > 0
        ):
            raise ConfigError(f"--probe-price must be a positive number, got {self.probe_price}")
        if self.confidence_measure not in ("confidence", "perplexity"):
            raise ConfigError("--confidence must be 'confidence' or 'perplexity'")
        if not 0.0 < self.low_fraction <= 1.0:
            raise ConfigError(f"--low-fraction must be in (0, 1], got {self.low_fraction}")
        if self.n_labeled < 2:
            raise ConfigError(f"--n-labeled must be at least 2, got {self.n_labeled}")
        if self.max_pool is not None and self.max_pool < 1:
            raise ConfigError("--max-pool must be positive")
        for name in (
            "max_new_tokens",
            "generation_batch_size",
            "gradient_batch_size",
            "shard_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        if not self.adapter_seeds:
            raise ConfigError("--adapter-seeds needs at least one seed")
        self.check_forecast_options()
        if self.annotate_out is not None and not self.annotate_out.endswith(".jsonl"):
            raise ConfigError(
                f"{self.annotate_out}: --annotate-out writes JSONL; give a .jsonl path"
            )
        if self.gradient_space not in ("lora", "frozen"):
            raise ConfigError("--gradient-space must be lora or frozen")
        self.memory_budget  # noqa: B018 - validates --max-memory
        self.lora(0)  # validates the adapter settings

    def lora(self, seed: int) -> LoraSettings:
        """The gradient adapter, its random A drawn from ``seed``."""
        return LoraSettings.from_options(self.lora_r, self.lora_alpha, self.lora_targets, seed)

    @classmethod
    def setting_defaults(cls) -> dict[str, Any]:
        """Each setting's default: a run folder saved before a setting existed matches a run
        that leaves it at its default."""
        import dataclasses

        defaults = {
            f.name: f.default
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING
        }
        defaults["tokenization"] = "split"  # recorded resolved; folders before it were split
        # Recorded since 0.2; earlier folders are taken as CPU runs (their dtype_resolved
        # already tells a GPU's bf16/fp16 from the CPU's float32 under --dtype auto).
        defaults["device_resolved"] = "cpu"
        return defaults

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
            "tokenization",
        ]
        from dataplan.models.loading import model_identity

        d = {k: getattr(self, k) for k in keys}
        d["tokenization"] = self.tokenization or "split"
        d["model"] = model_identity(self.model)
        d["data"] = None if self.data is None else str(Path(self.data).resolve())
        d["data_sha256"] = data_digest
        from dataplan.models.device import resolve_device, resolve_dtype

        device = resolve_device(self.device)
        d["device_resolved"] = device.type
        d["dtype_resolved"] = str(resolve_dtype(self.dtype, device))
        if self.adapter is not None:
            d["adapter"] = str(Path(self.adapter).resolve())
        return d
