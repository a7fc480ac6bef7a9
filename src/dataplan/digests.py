"""Content digests that key cached results and run folders.

Every cache in dataplan (curve points, CoS-Low run folders, selection shards, ensembles) is named
by a digest of what produced it, so a change of data, model or settings never reuses a stale
result. The functions below are the single source of those digests. Their byte layouts are part
of the on-disk format: changing one invalidates every cache keyed by it, including the committed
study caches (``studies/*/points``), so they are frozen and tested.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dataplan.io import to_json

_BLOCK = 1 << 20


def json_digest(obj: Any) -> str:
    """First 16 hex digits of sha256 over the compact JSON of ``obj`` (numpy values allowed)."""
    return hashlib.sha256(to_json(obj, indent=None).encode()).hexdigest()[:16]


def examples_digest(examples: Sequence[Any]) -> str:
    """``json_digest`` of every example's id, prompt, answer and options, in order."""
    return json_digest([[e.id, e.prompt, e.answer, list(e.choices or ())] for e in examples])


def pairs_digest(pairs: Sequence[Any]) -> str:
    """``json_digest`` of every preference pair's id, prompt, chosen and rejected response."""
    return json_digest([[p.id, p.prompt, p.chosen, p.rejected] for p in pairs])


def examples_key(examples: Sequence[Any]) -> str:
    """A 12-digit key of the examples' ids, prompts and answers, in order.

    Names CoS-Low's cached gradient files (``gradients-<kind>-<key>-...``): shorter than
    ``examples_digest`` and blind to options, which gradients never see.
    """
    h = hashlib.sha256()
    for ex in examples:
        h.update(f"{ex.id}\x00{ex.prompt}\x00{ex.answer}\x01".encode())
    return h.hexdigest()[:12]


def task_digest(name: str, path: str, examples: Sequence[Any]) -> str:
    """sha256 (64 digits) of a built-in task's name, source path and every example's content."""
    h = hashlib.sha256(f"task:{name}:{path}".encode())
    for e in examples:
        h.update(to_json([e.id, e.prompt, e.answer, e.choices], indent=None).encode())
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 (64 digits) of a file's bytes, or of a folder's relative paths and bytes, sorted."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if p is not path:
            h.update(p.relative_to(path).as_posix().encode())
        with p.open("rb") as fh:
            while chunk := fh.read(_BLOCK):
                h.update(chunk)
    return h.hexdigest()
