"""One result store for everything dataplan caches: JSON results, arrays and folders.

Every cached result is named by a **content-addressed key**: the digest of the canonical form of
what produced it (:func:`canonical`), so

- a change of data, model or settings never reuses a stale result;
- a setting left at its default is omitted from the key: adding a new setting (with a default)
  never invalidates results cached before it existed. The flip side: changing a default changes
  what old keys mean, so defaults are frozen by a test (and :data:`KEY_VERSION` is bumped when
  one must change);
- device and dtype enter as resolved (``cpu``/``cuda``, ``float32``/``bfloat16``…), never as
  ``auto``: a CPU fp32 result and a GPU bf16 result have different keys (:func:`runtime`).

Writes are atomic (a temporary file or folder beside the final name, then a rename), so a crash
never leaves a half-written entry under a final name and a rerun recomputes only what is
missing. Entries are files under one root folder::

    <root>/<name>-<key>.json            a JSON result (with its canonical settings inside)
    <root>/<name>.safetensors           arrays (plus string metadata)
    <root>/<name>/                      a folder written whole (e.g. a saved adapter)

A pass over a pool is cut into shards, each its own entry (:class:`ShardCache`): the unit of
resume and of ``torchrun`` data parallelism (:func:`dataplan.compute.distributed.sharded_pass`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dataplan.digests import json_digest
from dataplan.io import atomic_folder, atomic_path, to_json, write_json

KEY_VERSION = 1
"""Bumped when the meaning of existing keys changes (a changed default, a renamed field)."""


def canonical(obj: Any) -> Any:
    """The JSON-ready canonical form of a key's ingredients.

    A dataclass becomes the dict of its fields that differ from their defaults (recursively),
    an integer in a field annotated ``float`` counted as that float;
    dicts keep their keys (sorted when serialised), tuples become lists, numpy scalars Python
    numbers, paths strings. Floats that are whole numbers stay floats (``1.0`` ≠ ``1`` in a
    key, as in JSON).
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        floats = _float_fields(type(obj))
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            value = getattr(obj, f.name)
            if f.name in floats and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)  # epochs=3 and epochs=3.0 are one setting
            if _is_default(f, value):
                continue
            out[f.name] = canonical(value)
        return out
    if isinstance(obj, Mapping):
        return {str(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


@functools.cache
def _float_fields(cls: type) -> frozenset[str]:
    """The fields of a dataclass annotated ``float`` (or ``float | None``)."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation that cannot be resolved: no coercion
        return frozenset()
    return frozenset(
        name
        for name, hint in hints.items()
        if hint is float or (float in typing.get_args(hint) and int not in typing.get_args(hint))
    )


def _is_default(f: dataclasses.Field, value: Any) -> bool:
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        return False
    if isinstance(default, float) and isinstance(value, float):
        return default == value or (math.isnan(default) and math.isnan(value))
    return canonical(default) == canonical(value) and type(default) is type(value)


def key_of(identity: Any) -> str:
    """16 hex digits naming ``identity``: sha256 of its canonical compact JSON, keys sorted (so
    the order in which a key's ingredients are assembled never matters)."""
    return json_digest(_sorted(canonical(identity)))


def _sorted(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _sorted(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [_sorted(v) for v in obj]
    return obj


def runtime(device: str = "auto", dtype: str = "auto") -> dict[str, str]:
    """The resolved device type and dtype a computation runs with (for keys): ``auto`` resolved
    the way model loading resolves it."""
    from dataplan.models.device import resolve_device, resolve_dtype

    dev = resolve_device(device)
    return {"device": dev.type, "dtype": str(resolve_dtype(dtype, dev)).removeprefix("torch.")}


class ResultStore:
    """Cached results under one folder (see the module docstring for the layout).

    Args:
        root: the folder (created on the first write).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- JSON results -------------------------------------------------------------------------
    def json_path(self, name: str, identity: Any) -> Path:
        """Where the JSON result of ``identity`` lives: ``<root>/<name>-<key>.json``."""
        return self.root / f"{name}-{key_of(identity)}.json"

    def get_json(self, name: str, identity: Any) -> dict[str, Any] | None:
        """The cached result, or None."""
        path = self.json_path(name, identity)
        if not path.exists():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def put_json(self, name: str, identity: Any, result: Mapping[str, Any]) -> dict[str, Any]:
        """Cache ``result`` (atomically), with the canonical identity under ``settings``."""
        record = {**result, "settings": canonical(identity)}
        write_json(self.json_path(name, identity), record)
        return json.loads(to_json(record))

    def cached_json(
        self, name: str, identity: Any, compute: Callable[[], Mapping[str, Any]]
    ) -> dict[str, Any]:
        """The cached result of ``identity``, computing and caching it when missing."""
        found = self.get_json(name, identity)
        return found if found is not None else self.put_json(name, identity, compute())

    # -- arrays ---------------------------------------------------------------------------------
    def arrays_path(self, name: str) -> Path:
        return self.root / f"{name}.safetensors"

    def get_arrays(self, name: str) -> tuple[dict[str, np.ndarray], dict[str, str]] | None:
        """``(arrays, metadata)`` of a safetensors entry, or None."""
        from safetensors import safe_open
        from safetensors.numpy import load_file

        path = self.arrays_path(name)
        if not path.exists():
            return None
        with safe_open(str(path), "np") as fh:
            meta = fh.metadata() or {}
        return load_file(str(path)), dict(meta)

    def put_arrays(
        self, name: str, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
    ) -> None:
        from safetensors.numpy import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.arrays_path(name)) as tmp:
            save_file(
                {k: np.ascontiguousarray(v) for k, v in arrays.items()},
                str(tmp),
                metadata=dict(metadata) if metadata else None,
            )

    # -- folders --------------------------------------------------------------------------------
    def folder(self, name: str) -> Path:
        return self.root / name

    def put_folder(self, name: str, write: Callable[[Path], Any]) -> Path:
        """Write a folder whole: ``write(tmp)`` fills a temporary folder, renamed on success."""
        return atomic_folder(self.folder(name), write)


__all__ = ["KEY_VERSION", "ResultStore", "canonical", "key_of", "runtime"]


class ShardCache:
    """One pass's per-shard arrays: ``<name>-<shard size>-<i>`` safetensors entries of a store.

    An entry also holds ``_bounds`` = (start, stop) of its shard; one whose bounds differ (the
    pool was cut otherwise) counts as missing. A column of strings (e.g. generated answers) is
    kept as its UTF-8 bytes and offsets and comes back as a list of ``str``.
    """

    def __init__(self, store: ResultStore, name: str, shards: list[range]):
        self.store, self.name, self.shards = store, name, shards

    def entry(self, i: int) -> str:
        return f"{self.name}-{len(self.shards[0])}-{i:05d}"

    def get(self, i: int) -> dict[str, Any] | None:
        """Shard ``i``'s columns, or None."""
        found = self.store.get_arrays(self.entry(i))
        if found is None:
            return None
        arrays, meta = found
        bounds = arrays.pop("_bounds", None)
        if bounds is None or (int(bounds[0]), int(bounds[1])) != (
            self.shards[i].start,
            self.shards[i].stop,
        ):
            return None
        out: dict[str, Any] = dict(arrays)
        for name in json.loads(meta.get("text_columns", "[]")):
            data, ends = out.pop(f"{name}.utf8"), out.pop(f"{name}.ends")
            starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
            raw = data.tobytes()
            out[name] = [raw[a:b].decode("utf-8") for a, b in zip(starts, ends, strict=True)]
        return out

    def put(self, i: int, columns: Mapping[str, Any]) -> dict[str, Any]:
        """Save shard ``i``'s columns (arrays, or lists of strings) atomically; returns them."""
        arrays: dict[str, np.ndarray] = {}
        text: list[str] = []
        for name, col in columns.items():
            if isinstance(col, list) and all(isinstance(v, str) for v in col):
                encoded = [v.encode("utf-8") for v in col]
                arrays[f"{name}.utf8"] = np.frombuffer(b"".join(encoded) or b"", dtype=np.uint8)
                arrays[f"{name}.ends"] = np.cumsum([len(b) for b in encoded], dtype=np.int64)
                text.append(name)
            else:
                arrays[name] = np.asarray(col)
        arrays["_bounds"] = np.asarray([self.shards[i].start, self.shards[i].stop], np.int64)
        self.store.put_arrays(self.entry(i), arrays, {"text_columns": json.dumps(text)})
        return dict(columns)
