"""Registry of calibrations (CoS-Low → AUC'), shipped as JSON files beside this module.

A calibration is looked up by name (``llama-3.1-8b-instruct``) or by the path of a JSON file
written by :meth:`Calibration.to_dict`. The registry is a plain dict filled from the package's
JSON files on first use; :func:`register_calibration` adds one at run time.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from dataplan.errors import ConfigError
from dataplan.maths.forecast import Calibration

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


def get_calibration(name_or_path: str | Path) -> Calibration:
    """A calibration by registry name or JSON path.

    Raises:
        ConfigError: if neither a known name nor a readable calibration file.
    """
    _load_builtin()
    key = str(name_or_path)
    if key in _REGISTRY:
        return _REGISTRY[key]
    path = Path(key)
    if path.suffix == ".json" or path.exists():
        try:
            return Calibration.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ConfigError(f"{path}: calibration file not found") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: cannot read calibration file ({err})") from None
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise ConfigError(f"{path}: not a valid calibration file ({err})") from None
    known = ", ".join(sorted(_REGISTRY))
    raise ConfigError(f"unknown calibration {key!r}; known: {known} (or give a JSON file path)")
