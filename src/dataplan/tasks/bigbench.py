"""BIG-bench task files from the ``bigbench`` source archive on the package registry.

The archive (``bigbench-1.0.0.tar.gz``, 358 MB, Apache-2.0) holds every task's ``task.json``.
It cannot be pip-installed usefully (its sdist declares direct-URL dependencies), so it is
downloaded once from the registry's simple index (PEP 691 JSON), checked against the index's
SHA-256, and only the ``task.json`` members asked for are extracted, in one pass over the archive.
Both steps write atomically into the cache, so an interrupted download or extraction is redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from dataplan.errors import DataplanError
from dataplan.io import atomic_path
from dataplan.models.builtin import cache_dir

log = logging.getLogger(__name__)

PACKAGE = "bigbench"
VERSION = "1.0.0"
ARCHIVE = f"{PACKAGE}-{VERSION}.tar.gz"
MEMBER_PREFIX = f"{PACKAGE}-{VERSION}/bigbench/benchmark_tasks/"
DEFAULT_INDEX = "https://pypi.org/simple"


def bigbench_dir() -> Path:
    return cache_dir() / "bigbench"


def _index_url() -> str:
    return os.environ.get("DATAPLAN_PYPI_INDEX", DEFAULT_INDEX).rstrip("/")


def _archive_location() -> tuple[str, str]:
    """(url, sha256) of the archive from the registry's JSON simple index."""
    req = urllib.request.Request(
        f"{_index_url()}/{PACKAGE}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            index = json.load(resp)
    except OSError as err:
        raise DataplanError(
            f"cannot reach the package index {_index_url()} to fetch the BIG-bench archive ({err}); "
            f"place {ARCHIVE} in {bigbench_dir()} by hand to work offline"
        ) from None
    for f in index.get("files", []):
        if f.get("filename") == ARCHIVE:
            return f["url"], f["hashes"]["sha256"]
    raise DataplanError(f"{ARCHIVE} not found on the package index {_index_url()}")


def archive_path() -> Path:
    """The archive in the cache, downloaded (and verified) on first use."""
    target = bigbench_dir() / ARCHIVE
    if target.exists():
        return target
    url, sha256 = _archive_location()
    log.info("downloading %s (once) into %s", ARCHIVE, target.parent)
    digest = hashlib.sha256()
    with atomic_path(target) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=300) as resp, tmp.open("wb") as out:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as err:
            raise DataplanError(f"downloading {ARCHIVE} failed ({err}); try again") from None
        if digest.hexdigest() != sha256:
            raise DataplanError(f"{ARCHIVE}: checksum mismatch after download; try again")
    return target


def task_json_path(name: str) -> Path:
    """Where task ``name`` (e.g. ``arithmetic/2_digit_addition``) is cached once extracted."""
    return bigbench_dir() / "tasks" / name / "task.json"


def ensure_tasks(names: Iterable[str]) -> dict[str, Path]:
    """Extract every missing ``task.json`` among ``names`` in one pass; return their paths."""
    names = list(dict.fromkeys(names))
    missing = {f"{MEMBER_PREFIX}{n}/task.json": n for n in names if not task_json_path(n).exists()}
    if missing:
        log.info("extracting %d BIG-bench task(s) from the archive", len(missing))
        with tarfile.open(archive_path(), "r:gz") as tar:
            for member in tar:
                name = missing.pop(member.name, None)
                if name is None:
                    continue
                fh = tar.extractfile(member)
                if fh is None:
                    raise DataplanError(f"{ARCHIVE}: {member.name} is not a file")
                with atomic_path(task_json_path(name)) as tmp:
                    tmp.write_bytes(fh.read())
                if not missing:
                    break
        if missing:
            raise DataplanError(f"BIG-bench has no task {', '.join(sorted(missing.values()))}")
    return {n: task_json_path(n) for n in names}
