"""Write examples to JSONL, CSV or Parquet (atomically), in the format ``load_examples`` reads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dataplan.data.loading import Example
from dataplan.errors import ConfigError
from dataplan.io import atomic_path, write_jsonl, write_parquet

EXPORT_SUFFIXES = (".jsonl", ".csv", ".parquet", ".pq")


def check_export_path(out: str | Path) -> None:
    """Refuse an output file of a kind :func:`export_examples` cannot write (before the work)."""
    if Path(out).suffix.lower() not in EXPORT_SUFFIXES:
        raise ConfigError(f"{out}: choose a .jsonl, .csv or .parquet output")


def export_examples(examples: Sequence[Example], out: str | Path) -> Path:
    """Write ``id``, ``prompt``, ``answer`` (and ``choices`` when any example has them; CSV is
    flat, so it carries no choices)."""
    check_export_path(out)
    path = Path(out)
    records = [ex.to_record() for ex in examples]
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        write_jsonl(path, records)
    elif suffix in (".parquet", ".pq"):
        columns = {k: [r.get(k) for r in records] for k in ("id", "prompt", "answer")}
        if any("choices" in r for r in records):
            columns["choices"] = [r.get("choices") for r in records]
        write_parquet(path, columns)
    elif suffix == ".csv":
        import csv

        with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(
                fh, fieldnames=["id", "prompt", "answer"], extrasaction="ignore"
            )
            writer.writeheader()
            writer.writerows(records)
    else:  # pragma: no cover - refused by check_export_path
        raise AssertionError(suffix)
    return path
