"""Load any causal LM: a built-in name, a local folder or a hub id, through transformers.

``trust_remote_code`` is off unless the caller asks. Nothing here downloads by itself when the
model is built-in or local; a hub id is resolved by transformers as usual (honouring
``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dataplan.errors import ModelLoadError, first_line
from dataplan.models.builtin import BUILTIN_MODELS, builtin_model_path
from dataplan.models.device import resolve_device, resolve_dtype

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and where it came from.

    Attributes:
        model: the ``PreTrainedModel`` in eval mode on ``device``.
        tokenizer: its tokenizer; ``padding_side`` is left, ``pad_token`` always set.
        name: the name the user gave.
        path: the folder or hub id the weights were read from.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    path: str
    device: torch.device
    dtype: torch.dtype

    def describe(self) -> dict[str, str | int]:
        n_params = sum(p.numel() for p in self.model.parameters())
        return {
            "name": self.name,
            "path": self.path,
            "class": type(self.model).__name__,
            "parameters": int(n_params),
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
        }


def check_model_reference(name_or_path: str) -> None:
    """Fail at once on a model that cannot exist, before any data is read or model loaded.

    A built-in name or a hub-id-like name passes (a hub id is only checked when it loads); a
    folder must hold a ``config.json``; a path-like name whose folder is missing is an error.

    Raises:
        ModelLoadError: naming the model.
    """
    if name_or_path in BUILTIN_MODELS:
        return
    resolve_model_path(name_or_path)


def resolve_model_path(name_or_path: str) -> str:
    """Built-in name → converted cache folder; existing folder → itself; else a hub id.

    Raises:
        ModelLoadError: for a path-like name whose folder does not exist.
    """
    if name_or_path in BUILTIN_MODELS:
        return str(builtin_model_path(name_or_path))
    path = Path(name_or_path).expanduser()
    try:
        exists = path.exists()
    except OSError as err:
        raise ModelLoadError(
            f"{name_or_path}: cannot read model path ({err.strerror or err})"
        ) from None
    if exists:
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path}: not a model folder (no config.json)")
        return str(path)
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path:
        raise ModelLoadError(f"{name_or_path}: model folder not found")
    return name_or_path


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def model_identity(name_or_path: str) -> str:
    """What identifies a model's weights in cache keys.

    A built-in name or a hub id is its name. A local folder is its resolved path plus a
    fingerprint of ``config.json`` and of every weight file's name, size and modification time,
    so retraining a model in place (same path) cannot reuse results cached for the old weights
    [our choice: hashing every byte of a multi-GB model would cost more than most steps].
    """
    import hashlib

    if name_or_path in BUILTIN_MODELS:
        return name_or_path
    path = Path(name_or_path).expanduser()
    if not (path.is_dir() and (path / "config.json").exists()):
        return name_or_path
    h = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(path.rglob("*")):
        if f.is_file() and f.suffix in WEIGHT_SUFFIXES:
            st = f.stat()
            h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{path.resolve()}@{h.hexdigest()[:16]}"


def load_tokenizer(path: str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer of ``path`` with left padding and a pad token (the EOS when it has none)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{path}: cannot load tokenizer ({first_line(err)})") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, in eval mode, on the chosen device and dtype."""
    from transformers import AutoModelForCausalLM

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    path = resolve_model_path(name_or_path)
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dt, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        # RuntimeError: shape mismatches and safetensors errors; KeyError: unknown architecture.
        raise ModelLoadError(f"{path}: cannot load model ({first_line(err)})") from None
    # transformers decorates ``to`` with functools.wraps, whose stub loses the bound self.
    model.to(dev)  # type: ignore[arg-type]
    model.eval()
    window = getattr(model.config, "max_position_embeddings", None)
    if window and (tokenizer.model_max_length or 0) > window:
        # Many tokenizers carry a 1e30 sentinel; the model's positions are the real limit.
        tokenizer.model_max_length = int(window)
    log.info("loaded %s (%s) on %s as %s", name_or_path, type(model).__name__, dev, dt)
    return LoadedModel(
        model=model, tokenizer=tokenizer, name=name_or_path, path=path, device=dev, dtype=dt
    )
