"""The result store: canonical keys (defaults omitted, device/dtype resolved), atomic entries,
and run folders that refuse other settings but accept a setting left at its default."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from dataplan.data.formatting import PromptSettings
from dataplan.errors import ConfigError
from dataplan.evaluation import EvalSettings
from dataplan.store import ResultStore, canonical, key_of, runtime
from dataplan.training import TrainSettings
from dataplan.training.ensemble import EnsembleSettings
from dataplan.workflows.run_folder import RunFolder


@dataclasses.dataclass(frozen=True)
class Old:
    a: int = 1
    b: str = "x"


@dataclasses.dataclass(frozen=True)
class New:  # Old plus a setting added later, with a default
    a: int = 1
    b: str = "x"
    c: float = 0.5


def test_a_new_setting_at_its_default_keeps_every_key():
    assert canonical(Old()) == {} and canonical(Old(a=2)) == {"a": 2}
    assert key_of({"s": Old(a=2), "n": 3}) == key_of({"n": 3, "s": New(a=2)})
    assert key_of({"s": New(a=2, c=0.7)}) != key_of({"s": Old(a=2)})
    # the order in which a key is assembled does not matter; the values' types do
    assert key_of({"x": 1, "y": [1, 2]}) == key_of({"y": [1, 2], "x": 1})
    assert key_of({"x": 1}) != key_of({"x": 1.0}) and key_of({"x": (1, 2)}) == key_of({"x": [1, 2]})
    # ... but in a field annotated float, an int is that float (epochs=3 is epochs=3.0)
    assert key_of(TrainSettings(epochs=4)) == key_of(TrainSettings(epochs=4.0))
    assert canonical(TrainSettings(epochs=3)) == {}


def test_runtime_is_resolved():
    assert runtime("auto", "auto") == {"device": "cpu", "dtype": "float32"}  # no GPU here
    assert runtime("cpu", "bf16") == {"device": "cpu", "dtype": "bfloat16"}
    with pytest.raises(ConfigError):
        runtime("cpu", "float8")


def test_defaults_that_keys_rely_on_are_frozen():
    """Changing one of these defaults changes what every cached key means: it needs a migration
    of the committed caches (studies/migrate_keys.py) and a bump of dataplan.store.KEY_VERSION."""

    def defaults(cls):
        return {f.name: f.default for f in dataclasses.fields(cls) if f.init}

    assert defaults(TrainSettings) == {
        "method": "lora",
        "learning_rate": 5e-4,
        "batch_size": 8,
        "epochs": 3.0,
        "min_steps": 20,
        "max_steps": 300,
        "warmup_ratio": 0.1,
        "weight_decay": 0.0,
        "lora_r": 16,
        "lora_alpha": 32.0,
        "lora_targets": "all-linear",
    }
    assert defaults(EvalSettings) == {"max_new_tokens": 16, "batch_size": 64, "options": True}
    assert defaults(PromptSettings) == {"chat_template": True, "system_prompt": None}
    assert defaults(EnsembleSettings) == {
        "members": 3,
        "rank": 8,
        "alpha": 16.0,
        "learning_rate": 5e-4,
        "batch_size": 8,
        "epochs": 1.0,
        "checkpoints": (0.25, 1.0),
        "shared_init": False,
        "seed": 0,
    }


def test_json_entries_are_computed_once_and_carry_their_settings(tmp_path):
    store = ResultStore(tmp_path / "cache")
    calls = []

    def compute():
        calls.append(1)
        return {"value": 0.5, "nan": float("nan")}

    identity = {"train": TrainSettings(lora_r=4), "seed": 0}
    first = store.cached_json("point", identity, compute)
    again = store.cached_json("point", identity, compute)
    assert calls == [1] and first == again
    assert first["settings"] == {"train": {"lora_r": 4}, "seed": 0} and first["nan"] is None
    path = store.json_path("point", identity)
    assert path.name == f"point-{key_of(identity)}.json" and json.loads(path.read_text()) == first
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [path.name]  # no temporary left


def test_arrays_and_folders(tmp_path):
    store = ResultStore(tmp_path)
    assert store.get_arrays("g") is None
    store.put_arrays("g", {"gram": np.eye(2)}, {"adapter": "fresh"})
    arrays, meta = store.get_arrays("g")
    np.testing.assert_array_equal(arrays["gram"], np.eye(2))
    assert meta == {"adapter": "fresh"}
    umask = os.umask(0)
    os.umask(umask)
    assert store.arrays_path("g").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600

    def fail(tmp):
        (tmp / "half").write_text("x")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        store.put_folder("adapter", fail)
    assert not store.folder("adapter").exists()  # only a .partial folder, never the final name
    store.put_folder("adapter", lambda tmp: (tmp / "w").write_text("ok"))
    assert (store.folder("adapter") / "w").read_text() == "ok"
    store.put_folder("adapter", lambda tmp: (tmp / "v").write_text("new"))  # replaced whole
    assert sorted(p.name for p in store.folder("adapter").iterdir()) == ["v"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "g.safetensors"]


def test_run_folder_accepts_a_setting_at_its_default_and_refuses_others(tmp_path):
    RunFolder(tmp_path / "run", {"a": 1}).open()
    RunFolder(tmp_path / "run", {"a": 1, "new": None}, defaults={"new": None}).check()
    with pytest.raises(ConfigError, match="different settings"):
        RunFolder(tmp_path / "run", {"a": 1, "new": 5}, defaults={"new": None}).check()
    with pytest.raises(ConfigError, match="different settings"):
        RunFolder(tmp_path / "run", {"a": 2}).check()
    (tmp_path / "run" / "config.json").write_text('{"a": 1')  # damaged: a clear error
    with pytest.raises(ConfigError, match="not a valid run-folder config"):
        RunFolder(tmp_path / "run", {"a": 1}).check()


def test_an_estimate_folder_records_its_resolved_device(tmp_path):
    """estimate's run identity holds the resolved device and dtype; a folder saved before the
    device was recorded counts as a CPU run: resumed on the CPU, refused on a GPU."""
    from dataplan.workflows.estimate_config import EstimateConfig

    cfg = EstimateConfig(model="m", task="a")
    identity = cfg.compute_settings("digest")
    assert identity["device_resolved"] == "cpu" and identity["dtype_resolved"] == "torch.float32"
    older = {k: v for k, v in identity.items() if k != "device_resolved"}
    RunFolder(tmp_path / "run", older).open()
    RunFolder(tmp_path / "run", identity, defaults=cfg.setting_defaults()).check()
    on_gpu = {**identity, "device_resolved": "cuda"}
    with pytest.raises(ConfigError, match="device_resolved"):
        RunFolder(tmp_path / "run", on_gpu, defaults=cfg.setting_defaults()).check()


def test_to_json_writes_every_non_finite_float_as_null():
    """np.float64 is a Python float, np.float32 is not: both NaN and inf become null."""
    from dataplan.io import to_json

    values = {"a": np.float32("nan"), "b": [np.float32(1.5), np.float16("inf"), np.float64("nan")]}
    assert json.loads(to_json(values)) == {"a": None, "b": [1.5, None, None]}
