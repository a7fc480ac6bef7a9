"""Attach a LoRA adapter to a frozen model through peft.

Defaults follow CoS-Low (arXiv 2512.24991): rank 64, alpha 32, dropout off, every attention and
MLP projection (``all-linear`` in peft: every ``nn.Linear`` but the output head). A fresh adapter
has B = 0, so only the B matrices receive a gradient at first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from dataplan.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:
    import torch
    from peft import PeftModel


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters; ``target_modules`` is peft's (``all-linear`` or a list of names)."""

    r: int = 64
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: str | tuple[str, ...] = "all-linear"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, tuple) and (
            not self.target_modules or not all(self.target_modules)
        ):
            raise ConfigError("LoRA target modules must be non-empty names")
        if self.r < 1:
            raise ConfigError(f"LoRA rank must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_options(cls, r: int, alpha: float, targets: str, seed: int = 0) -> LoraSettings:
        """From command-line options: ``targets`` is ``all-linear`` or comma-separated names."""
        modules: str | tuple[str, ...] = targets
        if targets != "all-linear":
            modules = tuple(t.strip() for t in targets.split(",") if t.strip())
        return cls(r=r, alpha=alpha, target_modules=modules, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(self.target_modules, tuple):
            d["target_modules"] = list(self.target_modules)
        return d


def attach_lora(model: torch.nn.Module, settings: LoraSettings) -> PeftModel:
    """A peft model with a fresh adapter; its random A is drawn from ``settings.seed``."""
    import torch
    from peft import LoraConfig, get_peft_model

    targets = settings.target_modules
    config = LoraConfig(
        r=settings.r,
        # peft annotates lora_alpha as int; a float works (its scaling is alpha / r).
        lora_alpha=settings.alpha,  # type: ignore[arg-type]
        lora_dropout=settings.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        try:
            peft_model = get_peft_model(model, config)
        except ValueError as err:  # e.g. target modules not found in the model
            raise ConfigError(f"cannot attach LoRA: {str(err).splitlines()[0]}") from None
    return peft_model


def load_adapter(model: torch.nn.Module, adapter_dir: str | Path) -> PeftModel:
    """A peft model with the trainable adapter saved in ``adapter_dir``."""
    from peft import PeftModel

    path = Path(adapter_dir)
    if not (path / "adapter_config.json").exists():
        raise ModelLoadError(f"{path}: not a PEFT adapter folder (no adapter_config.json)")
    try:
        return PeftModel.from_pretrained(model, str(path), is_trainable=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelLoadError(f"{path}: cannot load adapter ({err})") from None


@contextlib.contextmanager
def merged_for_evaluation(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Inside the block, every LoRA layer of ``model`` is merged into its base weight
    (W + s·B·A: one matmul per layer instead of three); afterwards the adapter is unmerged
    and each base weight restored **bit for bit** from a copy (unmerging alone leaves rounding
    error, W + Δ − Δ ≠ W in floating point, which would make a later fine-tune of the same
    loaded model depend on what was evaluated before). The copies cost one base weight per
    adapted layer, kept on the CPU [our choice: GPU memory is the scarce one]. A model
    without LoRA layers, or already merged, is used as is.
    """
    import torch
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer) and not m.merged]
    if not layers:
        yield model
        return
    bases = [cast("torch.nn.Linear", m.get_base_layer()) for m in layers]
    saved = [b.weight.detach().to("cpu", copy=True) for b in bases]
    for m in layers:
        m.merge()
    try:
        yield model
    finally:
        with torch.no_grad():
            for m, b, w in zip(layers, bases, saved, strict=True):
                m.unmerge()
                b.weight.copy_(w)
