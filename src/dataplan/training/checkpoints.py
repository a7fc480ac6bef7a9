"""Saving adapters during and after training, and leaving the frozen model clean on failure."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dataplan.io import atomic_folder

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedModel, TrainerCallback


def save_adapter(model: PeftModel | PreTrainedModel, path: Path) -> None:
    """Save a peft adapter folder atomically (written beside, then renamed); a model that is not
    a peft model is saved whole."""
    atomic_folder(path, lambda tmp: model.save_pretrained(str(tmp)))


def adapter_complete(path: Path) -> bool:
    """A saved adapter folder with its config and weights."""
    return (path / "adapter_config.json").exists() and (path / "adapter_model.safetensors").exists()


def save_at_steps(steps_to_dirs: Mapping[int, Path]) -> TrainerCallback:
    """A ``TrainerCallback`` saving the adapter at the given global steps (0 = before the first
    step), on the main process only."""
    from transformers import TrainerCallback

    def maybe_save(step: int, state: Any, model: Any) -> None:
        path = steps_to_dirs.get(step)
        if path is not None and state.is_world_process_zero:
            save_adapter(model, path)

    class SaveAt(TrainerCallback):
        def on_train_begin(
            self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any
        ) -> None:
            maybe_save(0, state, model)

        def on_step_end(
            self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any
        ) -> None:
            maybe_save(state.global_step, state, model)

    return SaveAt()


def detach_adapters(model: torch.nn.Module) -> None:
    """Remove any LoRA layers peft injected into ``model`` (in place).

    peft's own ``unload`` needs the ``PeftModel``, which a failure inside training loses.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
