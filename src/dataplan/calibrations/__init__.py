"""Registry of calibrations (CoS-Low → AUC'), shipped as JSON files beside this module, and of
probe calibrations (probe feature → AUC' per probe depth), shipped in ``probes/``.

A calibration is looked up by name (``llama-3.1-8b-instruct``) or by the path of a JSON file
written by :meth:`Calibration.to_dict`. The registry is a plain dict filled from the package's
JSON files on first use; :func:`register_calibration` adds one at run time. A probe calibration
shipped for a model has the name of that model's CoS-Low calibration
(``probes/smollm2-135m-instruct.json``): ``estimate --probe auto`` finds it by that name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from dataplan.errors import ConfigError, InputError
from dataplan.maths.forecast import Calibration
from dataplan.parsing import decode_json, is_number, read_utf8

_REGISTRY: dict[str, Calibration] = {}


def _load_builtin() -> None:
    if _REGISTRY:
        return
    for entry in resources.files(__name__).iterdir():
        if entry.name.endswith(".json"):
            cal = Calibration.from_dict(json.loads(entry.read_text(encoding="utf-8")))
            _REGISTRY[cal.name] = cal


def register_calibration(calibration: Calibration) -> None:
    """Make ``calibration`` available by its name."""
    _load_builtin()
    _REGISTRY[calibration.name] = calibration


def list_calibrations() -> list[Calibration]:
    """Every calibration known by name, sorted by name."""
    _load_builtin()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def has_calibration(name: str) -> bool:
    _load_builtin()
    return name in _REGISTRY


def tokenization_for(model: str) -> str:
    """How CoS-Low is tokenised for ``model`` by default: as its calibration (the one named like
    the model) was fitted, else ``split``."""
    return get_calibration(model).tokenization if has_calibration(model) else "split"


def get_calibration(name_or_path: str | Path) -> Calibration:
    """A calibration by registry name or JSON path.

    Raises:
        ConfigError: if neither a known name nor a readable calibration file; for a file, the
            message names the file and the first malformed field.
    """
    _load_builtin()
    key = str(name_or_path)
    if key in _REGISTRY:
        return _REGISTRY[key]
    path = Path(key)
    try:
        is_file = path.suffix == ".json" or path.exists()
    except (OSError, ValueError):  # a name too long or with a NUL byte is no file
        is_file = False
    if is_file:
        return read_calibration(path)
    known = ", ".join(sorted(_REGISTRY))
    raise ConfigError(f"unknown calibration {key!r}; known: {known} (or give a JSON file path)")


def read_calibration(path: str | Path) -> Calibration:
    """The calibration saved in a JSON file by :meth:`Calibration.to_dict`.

    Raises:
        ConfigError: naming the file (and the field) if it cannot be read or is malformed.
    """
    path = Path(path)
    try:
        data = decode_json(read_utf8(path))
    except FileNotFoundError:
        raise ConfigError(f"{path}: calibration file not found") from None
    except InputError as err:  # not UTF-8
        raise ConfigError(f"{path}: cannot read calibration file ({err.message})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read calibration file ({err.strerror or err})") from None
    except ValueError as err:  # JSONSyntaxError
        raise ConfigError(f"{path}: not a valid calibration file (malformed JSON: {err})") from None
    problem = calibration_problem(data)
    if problem is None:
        try:
            return Calibration.from_dict(data)
        except (TypeError, ValueError) as err:
            problem = str(err)
    raise ConfigError(f"{path}: not a valid calibration file ({problem})")


def _finite(v: Any) -> bool:
    return is_number(v, finite=True)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


_FIELDS: dict[str, tuple[Callable[[Any], bool], str, bool]] = {
    # field: (check, what it must be, required)
    "name": (lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string", True),
    "coef": (_finite, "a finite number", True),
    "intercept": (_finite, "a finite number", True),
    "n_max": (
        lambda v: _finite(v) and float(v).is_integer() and v >= 2,
        "an integer of at least 2",
        False,
    ),
    "residual_std": (_optional(lambda v: _finite(v) and v >= 0), "a non-negative number", False),
    "loo_residuals": (
        lambda v: isinstance(v, list) and all(map(_finite, v)),
        "a list of finite numbers",
        False,
    ),
    "n_tasks": (
        _optional(lambda v: _finite(v) and float(v).is_integer() and v >= 0),
        "a non-negative integer",
        False,
    ),
    "source": (lambda v: isinstance(v, str), "a string", False),
    "extra": (
        lambda v: (
            isinstance(v, dict)
            and all(isinstance(k, str) for k in v)
            and _optional(_finite)(v.get("loo_spearman"))
        ),
        'an object (whose "loo_spearman" is a number)',
        False,
    ),
    "tokenization": (lambda v: v in ("split", "joint"), '"split" or "joint"', False),
}


def shipped_probe_calibrations() -> list[str]:
    """Names of the probe calibrations shipped with the package, sorted."""
    folder = resources.files(__name__).joinpath("probes")
    if not folder.is_dir():
        return []
    return sorted(e.name[: -len(".json")] for e in folder.iterdir() if e.name.endswith(".json"))


def shipped_probe_calibration_text(name: str) -> str | None:
    """The JSON text of the probe calibration shipped under ``name``, or None."""
    if name not in shipped_probe_calibrations():
        return None
    entry = resources.files(__name__).joinpath("probes").joinpath(f"{name}.json")
    return entry.read_text(encoding="utf-8")


def calibration_problem(data: Any) -> str | None:
    """What makes ``data`` (decoded JSON) no calibration, naming the field, or None."""
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    unknown = sorted(str(k) for k in data if k not in _FIELDS)
    if unknown:
        return f"unknown calibration fields: {unknown}"
    for name, (check, what, required) in _FIELDS.items():
        if name not in data:
            if required:
                return f'field "{name}": missing'
            continue
        value = data[name]
        if not check(value):
            shown = repr(value) if len(repr(value)) <= 40 else type(value).__name__
            return f'field "{name}": expected {what}, got {shown}'
    return None
