"""Self-describing run folders that resume after a crash.

A run folder holds ``config.json`` (the settings that determine the results), ``versions.json``,
cached intermediate results and the final results. Re-running with the same folder and the same
settings reuses every cached step; a folder whose saved settings differ is refused rather than
silently mixed (like kronfluence's ``_save_arguments`` check). A setting missing on one side counts
as its default (``defaults``), so a folder written before a setting existed stays valid when
that setting is left at its default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dataplan.errors import ConfigError
from dataplan.io import to_json, versions, write_json

INVOCATION: list[str] | None = None
"""The arguments after ``dataplan`` of the running command (set by the CLI; ``None`` from the
Python API): what :func:`record_command` writes."""

COMMAND_FILE = "command.txt"


def record_command(folder: str | Path) -> None:
    """Write the command line that is running into ``folder``/command.txt (the report shows
    it as the command behind a result). Not part of a run's identity: a resume rewrites it."""
    if INVOCATION is None:
        return
    import shlex

    from dataplan.io import atomic_path

    path = Path(folder) / COMMAND_FILE
    text = "dataplan " + shlex.join(INVOCATION) + "\n"
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return  # a resume with the same command leaves the folder's files untouched
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _versions_differ(first: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether Python, platform or a package version differs between two ``versions()``
    records — on the entries both have (a package recorded since is no difference), not the
    git commit (which moves every commit)."""
    return any(first[k] != current[k] for k in first.keys() & current.keys() if k != "git_commit")


class RunFolder:
    """A folder for one run.

    Args:
        path: the folder (created on :meth:`open`).
        config: the settings; must be JSON-serialisable.
        defaults: setting → default value; a setting absent from a saved (or the new) config is
            taken to be at its default.
    """

    CONFIG = "config.json"
    VERSIONS = "versions.json"

    def __init__(
        self, path: str | Path, config: dict[str, Any], defaults: dict[str, Any] | None = None
    ):
        self.path = Path(path)
        self.config = json.loads(to_json(config))
        self.defaults = json.loads(to_json(defaults or {}))

    def check(self) -> None:
        """Raise :class:`ConfigError` if the folder holds a run with other settings."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.path}: exists and is not a folder")
        saved_path = self.path / self.CONFIG
        if not saved_path.exists():
            if self.path.exists() and any(self.path.iterdir()):
                raise ConfigError(f"{self.path}: folder exists and is not a dataplan run folder")
            return
        from dataplan.errors import InputError
        from dataplan.parsing import decode_json, read_utf8

        try:
            saved = decode_json(read_utf8(saved_path))
        except (ValueError, InputError) as err:  # a damaged or hand-edited file
            raise ConfigError(
                f"{saved_path}: not a valid run-folder config ({err}); use another --run-dir"
            ) from None
        if not isinstance(saved, dict):
            raise ConfigError(f"{saved_path}: not a valid run-folder config (not an object)")
        diffs = [
            k
            for k in sorted(set(saved) | set(self.config))
            if saved.get(k, self.defaults.get(k)) != self.config.get(k, self.defaults.get(k))
        ]
        if diffs:
            shown = "; ".join(f"{k}: {saved.get(k)!r} -> {self.config.get(k)!r}" for k in diffs[:3])
            raise ConfigError(
                f"{self.path}: holds a run with different settings ({shown}); use another --run-dir"
            )

    def open(self) -> RunFolder:
        """Create the folder (after :meth:`check`) and record settings and versions."""
        self.check()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(
                f"{self.path}: cannot create the run folder ({err.strerror or err})"
            ) from None
        if not (self.path / self.CONFIG).exists():
            write_json(self.path / self.CONFIG, self.config)
        # versions.json describes how the cached results were made: written once. A resume under
        # other versions is recorded beside it rather than over it.
        current = versions()
        first = self.path / self.VERSIONS
        if not first.exists():
            write_json(first, current)
        elif _versions_differ(json.loads(first.read_text(encoding="utf-8")), current):
            write_json(self.path / "versions-resumed.json", current)
        record_command(self.path)
        return self

    def open_shared(self) -> RunFolder:
        """:meth:`open` once for all ``torchrun`` processes: rank 0 creates the folder and
        records the settings, the others wait for it and then check it (checking earlier
        could catch rank 0 half-way through writing and see a foreign folder). Alone, the
        same as :meth:`open`."""
        from dataplan.compute.distributed import barrier, is_main

        if is_main():
            self.open()
        barrier()
        if not is_main():
            self.check()
        return self

    def file(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text(encoding="utf-8"))

    def write_json(self, name: str, obj: Any) -> Path:
        write_json(self.path / name, obj)
        return self.path / name

    COMPUTE_SECONDS = "compute_seconds.json"

    def record_seconds(self, step: str, seconds: float) -> None:
        """Remember how long a step took when it was computed (kept when later runs reuse it)."""
        done = self.compute_seconds()
        done[step] = round(float(seconds), 3)
        write_json(self.path / self.COMPUTE_SECONDS, done)

    def compute_seconds(self) -> dict[str, float]:
        """Seconds each cached step took when it was computed."""
        path = self.path / self.COMPUTE_SECONDS
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
