"""Re-key the committed study caches for the result store's canonical keys (dataplan 0.2).

Before the store, a cached experiment was named by the digest of its settings as written then:
every training setting spelled out (so adding one invalidated every cache), device and dtype as
given (``"auto"``, so a CPU fp32 result and a GPU bf16 one shared a key). The store names it by
:func:`dataplan.store.key_of` of the canonical identity: settings at their defaults omitted,
device and dtype resolved. Every committed result here was computed on a CPU in float32, which is
what ``"auto"`` resolved to. This script renames each file to its new key and records the
canonical identity inside; the results themselves are untouched. It also moves the select
study's noise rankings (until now recomputed from uncommitted run folders) into its cache.

    .venv/bin/python studies/migrate_keys.py [--dry-run]

Idempotent: a file already under its new name is left alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
RUNTIME = {"device": "cpu", "dtype": "float32"}  # what "auto" resolved to on the study machine


def _non_default(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` of a dataclass's fields without those at their default (as canonical())."""
    from dataplan.store import canonical

    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.init}
    return {k: v for k, v in values.items() if canonical(defaults.get(k, object())) != v}


def point_identity(old: dict[str, Any]) -> dict[str, Any]:
    """The new common identity of a curve/scaling point from its old settings."""
    from dataplan.data.formatting import PromptSettings
    from dataplan.evaluation import EvalSettings
    from dataplan.training import TrainSettings

    if old.get("dtype") != "auto":
        raise ValueError(f"unexpected dtype {old.get('dtype')!r}")
    ev = old["eval"]
    new: dict[str, Any] = {
        "model": old["model"],
        **RUNTIME,
        "prompts": _non_default(
            PromptSettings,
            {"chat_template": ev["chat_template"], "system_prompt": ev["system_prompt"]},
        ),
        "pool": old["pool"],
        "test": old["test"],
    }
    if "train" in old:
        new["train"] = _non_default(TrainSettings, old["train"])
    new["eval"] = _non_default(EvalSettings, {"max_new_tokens": ev["max_new_tokens"]})
    return new


def curve_key(old: dict[str, Any]) -> dict[str, Any]:
    rest = {
        k: v for k, v in old.items() if k not in ("model", "pool", "test", "train", "eval", "dtype")
    }
    return {**point_identity(old), **rest}


def select_key(point: dict[str, Any]) -> dict[str, Any]:
    from dataplan.training.ensemble import EnsembleSettings

    identity = dict(point["identity"])
    extra = {k: identity.pop(k) for k in ("target", "noise", "target_size")}
    selection = dict(point["selection"])
    if "ensemble" in selection:
        selection["ensemble"] = _non_default(EnsembleSettings, selection["ensemble"])
    fields = (
        "task",
        "method",
        "seed",
        "selection_seed",
        "pool",
        "fraction",
        "members",
        "epochs",
        "test",
    )
    return {
        **{k: point[k] for k in fields},
        "identity": {**point_identity(identity), **extra},
        "selection": selection,
    }


def migrate(folder: Path, rekey, name_of, dry_run: bool) -> int:
    from dataplan.io import write_json
    from dataplan.store import ResultStore, canonical

    store = ResultStore(folder)
    moved = 0
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        new_key = rekey(record)
        target = store.json_path(name_of(path), new_key)
        if target == path:
            continue
        record = {**record, "settings": canonical(new_key)}
        if "identity" in new_key:  # the select study keeps its key's parts at the top level
            record.update(identity=new_key["identity"], selection=new_key["selection"])
        moved += 1
        if not dry_run:
            write_json(target, record)
            path.unlink()
    return moved


def _stem_without_key(path: Path) -> str:
    return path.stem.rsplit("-", 1)[0]


def select_rankings(dry_run: bool) -> int:
    """The noise rankings of results.json, cached under the study's ranking keys."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "select_study", HERE / "select-smollm2" / "run.py"
    )
    assert spec and spec.loader
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    results = json.loads((HERE / "select-smollm2" / "results.json").read_text(encoding="utf-8"))
    written = 0
    for label, entry in results.items():
        for method, m in entry["methods"].items():
            if "noise_ranking" not in m:
                continue
            point = next(
                json.loads(p.read_text(encoding="utf-8"))
                for p in sorted(
                    (HERE / "select-smollm2" / "points").glob(f"{label}-{method}-s*.json")
                )
            )
            name, identity = study.ranking_key(point)
            written += 1
            if not dry_run:
                study.store().put_json(name, identity, m["noise_ranking"])
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    total = 0
    for folder in (
        HERE / "smollm2-135m-instruct" / "points",
        HERE / "scaling-smollm2" / "points",
    ):
        n = migrate(folder, lambda r: curve_key(r["settings"]), _stem_without_key, args.dry_run)
        print(f"{folder}: {n} files re-keyed")
        total += n
    folder = HERE / "select-smollm2" / "points"
    n = migrate(folder, select_key, _stem_without_key, args.dry_run)
    print(f"{folder}: {n} files re-keyed")
    print(f"select study noise rankings cached: {select_rankings(args.dry_run)}")


if __name__ == "__main__":
    main()
