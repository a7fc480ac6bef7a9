"""Crash tests: SIGKILL a CLI run once its first unit is cached, rerun it, compare and check reuse.

For `dataplan curve`, `dataplan select --method gsnr` and `dataplan scaling runs` on a tiny random
model, a subprocess is killed (SIGKILL, whole process group) as soon as a finished unit appears
on disk, then rerun to completion. Asserted: (a) the results equal those of an uninterrupted run
in another cache/run folder; (b) nothing finished before the kill was recomputed: every cached
file that existed right after the kill has the same bytes and mtime after the rerun.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dataplan.io import read_parquet
from test_cli import run_main

POLL = 0.02  # seconds between looks at the cache
TIMEOUT = 240.0  # a generous bound for a loaded machine; each run takes ~10 s alone
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "CUDA_VISIBLE_DEVICES": "",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
WORDS = ["red", "blue", "green", "cat"]

Snapshot = dict[Path, tuple[bytes, int]]


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def _run_until(
    args: list[str], cwd: Path, unit_done: Callable[[], bool], what: str, log: Path
) -> None:
    """Run ``dataplan <args>`` and SIGKILL its process group once ``unit_done()`` holds."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dataplan", *args],
            cwd=cwd,
            env=ENV,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not unit_done():
            if proc.poll() is not None:
                pytest.fail(
                    f"`dataplan {args[0]}` exited with {proc.returncode} before {what} appeared "
                    f"(give it more work so the kill lands mid-run):\n{_tail(log)}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {TIMEOUT:.0f} s:\n{_tail(log)}")
            time.sleep(POLL)
        _kill(proc)
        assert proc.returncode == -signal.SIGKILL, (
            f"`dataplan {args[0]}` finished ({proc.returncode}) before it could be killed: "
            f"give it more work\n{_tail(log)}"
        )
    finally:
        _kill(proc)


def _kill(proc: subprocess.Popen) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group: no helper process outlives it
        proc.wait(timeout=30)


def _run_to_end(args: list[str], cwd: Path, log: Path) -> None:
    with log.open("wb") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "dataplan", *args],
            cwd=cwd,
            env=ENV,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=TIMEOUT,
            start_new_session=True,
        )
    assert proc.returncode == 0, _tail(log)


def _run_in_process(args: list[str], capsys) -> None:
    """The uninterrupted reference run: the same CLI, in this process (saves a startup)."""
    code, _, err = run_main(args, capsys)
    assert code == 0, err


def _temporary(rel: Path) -> bool:
    """A write in progress: an atomic file's temporary twin or a folder's ``.partial``."""
    return any(p.endswith(".partial") for p in rel.parts) or (
        rel.name.startswith(".") and rel.name.endswith(".tmp")
    )


def _snapshot(root: Path, keep: Callable[[Path], bool] = lambda rel: True) -> Snapshot:
    """Bytes and mtime of every finished cached file under ``root``."""
    snap = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not _temporary(rel) and keep(rel):
            snap[rel] = (path.read_bytes(), path.stat().st_mtime_ns)
    return snap


def _assert_untouched(root: Path, snap: Snapshot) -> None:
    assert snap, f"nothing was cached under {root} before the kill"
    for rel, (data, mtime) in snap.items():
        path = root / rel
        assert path.is_file(), f"{rel}: cached before the kill, gone after the rerun"
        assert path.read_bytes() == data, f"{rel}: recomputed with other content"
        assert path.stat().st_mtime_ns == mtime, f"{rel}: rewritten (recomputed) by the rerun"


def _jsons(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.json")) if cache.is_dir() else []


def _task_file(path: Path, n: int = 40) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            rec = {"id": f"e{i}", "prompt": f"Colour {i}?", "answer": WORDS[i % 4]}
            fh.write(json.dumps({**rec, "choices": WORDS}) + "\n")
    return path


def _without_timing(point: dict) -> dict:
    return {k: v for k, v in point.items() if k != "seconds"}


def test_curve_resumes_after_sigkill(tiny_model_dir, tmp_path, capsys):
    data = _task_file(tmp_path / "task.jsonl")

    def args(tag: str) -> list[str]:
        return [
            "curve",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(data),
            "--budgets",
            "0,4,8",
            "--seeds",
            "0,1,2",  # 7 points: 6 remain after the first (zero-shot) one
            "--batch-size",
            "4",
            "--min-steps",
            "4",
            "--max-steps",
            "4",
            "--lora-r",
            "4",
            "--max-test",
            "8",
            "--max-new-tokens",
            "3",
            "--cache",
            str(tmp_path / f"cache-{tag}"),
            "--out-dir",
            str(tmp_path / f"out-{tag}"),
            "--quiet",
        ]

    cache, out = tmp_path / "cache-crash", tmp_path / "out-crash"
    _run_until(
        args("crash"), tmp_path, lambda: bool(_jsons(cache)), "a cached point", tmp_path / "1.log"
    )
    assert not (out / "summary.json").exists(), "the killed curve run completed"
    snap = _snapshot(cache)
    assert len(snap) < 7, f"{len(snap)} of 7 points were cached before the kill"
    _run_to_end(args("crash"), tmp_path, tmp_path / "2.log")
    _assert_untouched(cache, snap)

    _run_in_process(args("ref"), capsys)
    crashed = json.loads((out / "summary.json").read_text())
    reference = json.loads((tmp_path / "out-ref" / "summary.json").read_text())
    for key in ("curve", "auc", "spread_over_seeds"):
        assert crashed[key] == reference[key], key
    names = [p.name for p in _jsons(cache)]
    assert len(names) == 7 and names == [p.name for p in _jsons(tmp_path / "cache-ref")]
    for name in names:
        got = json.loads((cache / name).read_text())
        want = json.loads((tmp_path / "cache-ref" / name).read_text())
        assert _without_timing(got) == _without_timing(want), name


def test_scaling_runs_resume_after_sigkill(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "task.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": "x" * (1 + i % 9), "answer": "ab"[i % 2], "choices": ["a", "b"]})
            + "\n"
            for i in range(40)
        )
    )

    def args(tag: str) -> list[str]:
        return [
            "scaling",
            "runs",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(data),
            "--n",
            "4,6,8",
            "--strategies",
            "shortest,longest",  # 6 runs
            "--compute-tokens",
            "200",
            "--batch-size",
            "4",
            "--max-test",
            "4",
            "--cache",
            str(tmp_path / f"cache-{tag}"),
            "--out",
            str(tmp_path / f"runs-{tag}.csv"),
            "--quiet",
        ]

    cache, out = tmp_path / "cache-crash", tmp_path / "runs-crash.csv"
    _run_until(
        args("crash"), tmp_path, lambda: bool(_jsons(cache)), "a cached run", tmp_path / "1.log"
    )
    assert not out.exists(), "the killed scaling run completed"
    snap = _snapshot(cache)
    assert len(snap) < 6, f"{len(snap)} of 6 runs were cached before the kill"
    _run_to_end(args("crash"), tmp_path, tmp_path / "2.log")
    _assert_untouched(cache, snap)
    assert len(_jsons(cache)) == 6

    _run_in_process(args("ref"), capsys)
    assert out.read_text() == (tmp_path / "runs-ref.csv").read_text()


CHECKPOINTS = 2  # --checkpoints 0.25,1.0: an early and a late adapter per member


def _complete_members(run: Path) -> set[Path]:
    """Member folders (relative to the run) holding every checkpoint's finished adapter."""
    done = set()
    for member in run.glob("ensemble-*/member-*"):
        steps = [
            s
            for s in member.glob("step-*")
            if not s.name.endswith(".partial")
            and (s / "adapter_model.safetensors").is_file()
            and (s / "adapter_config.json").is_file()
        ]
        if len(steps) == CHECKPOINTS:
            done.add(member.relative_to(run))
    return done


def _shards(run: Path) -> list[Path]:
    return sorted((run / "shards").glob("*.safetensors")) if (run / "shards").is_dir() else []


def _finished_units(run: Path) -> Callable[[Path], bool]:
    """Files of finished units: a member's adapters once all its checkpoints are saved (an
    unfinished member is retrained whole, by design), shards, and the run's own files."""
    members = _complete_members(run)

    def keep(rel: Path) -> bool:
        if rel.parts[0].startswith("ensemble-"):
            return Path(*rel.parts[:2]) in members
        return True

    return keep


def test_select_gsnr_resumes_after_sigkill(tiny_model_dir, tmp_path, capsys):
    keys = "abcdefgh"
    rows = [
        {"id": f"ex{i}", "prompt": f"x={keys[i % 8]}", "answer": "PQRSTUVW"[(i * 3) % 8]}
        for i in range(24)
    ]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def args(tag: str) -> list[str]:
        return [
            "select",
            "--method",
            "gsnr",
            "--data",
            str(pool),
            "--model",
            str(tiny_model_dir),
            "--fraction",
            "0.25",
            "--members",
            "3",
            "--epochs",
            "1",  # 3 steps of 8 per member: adapters saved at steps 1 and 3
            "--checkpoints",
            "0.25,1.0",
            "--lora-r",
            "4",
            "--stats-batch-size",
            "4",
            "--shard-size",
            "8",  # 3 shards, 6 adapters' statistics each
            "--run-dir",
            str(tmp_path / f"run-{tag}"),
            "--out",
            str(tmp_path / f"subset-{tag}.jsonl"),
            "--scores-out",
            str(tmp_path / f"scores-{tag}.parquet"),
            "--quiet",
        ]

    run = tmp_path / "run-crash"
    subset, scores = tmp_path / "subset-crash.jsonl", tmp_path / "scores-crash.parquet"
    # First kill: once an ensemble member is trained (the others still to train).
    _run_until(
        args("crash"),
        tmp_path,
        lambda: bool(_complete_members(run)) or bool(_shards(run)),
        "a trained ensemble member",
        tmp_path / "1.log",
    )
    assert not subset.exists() and not scores.exists(), "the killed select run completed"
    assert len(_complete_members(run)) < 3 and not _shards(run), "killed too late"
    first = _snapshot(run, _finished_units(run))
    assert any(rel.name == "adapter_model.safetensors" for rel in first)
    # Second kill: once a scoring shard is cached (more shards still to score).
    _run_until(args("crash"), tmp_path, lambda: bool(_shards(run)), "a shard", tmp_path / "2.log")
    assert not subset.exists() and not scores.exists(), "the killed select run completed"
    _assert_untouched(run, first)
    assert len(_complete_members(run)) == 3
    second = _snapshot(run, _finished_units(run))
    assert 0 < len(_shards(run)) < 18, "killed after every shard was scored"
    _run_to_end(args("crash"), tmp_path, tmp_path / "3.log")
    _assert_untouched(run, first)
    _assert_untouched(run, second)

    _run_in_process(args("ref"), capsys)
    assert subset.read_bytes() == (tmp_path / "subset-ref.jsonl").read_bytes()
    assert read_parquet(scores) == read_parquet(tmp_path / "scores-ref.parquet")
    assert [p.name for p in _shards(run)] == [p.name for p in _shards(tmp_path / "run-ref")]


def _complete_checkpoints(state: Path) -> list[Path]:
    return [c for c in state.glob("checkpoint-*") if (c / "trainer_state.json").exists()]


@pytest.mark.parametrize("objective", ["sft", "dpo"])
def test_train_resumes_after_sigkill(tiny_model_dir, tmp_path, capsys, objective):
    """Killed after a checkpoint, `train` resumes to the adapter and weights of an uninterrupted
    run — through the core loop (sft) and through TRL's trainer with its reference (dpo)."""
    from safetensors.numpy import load_file

    if objective == "sft":
        data = _task_file(tmp_path / "task.jsonl", n=24)
        holdout = _task_file(tmp_path / "holdout.jsonl", n=4)
    else:
        from test_preference import _pair_files

        data, holdout = _pair_files(tmp_path, n=24, n_holdout=4)

    def args(tag: str) -> list[str]:
        return [
            "train",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(data),
            "--objective",
            objective,
            "--holdout",
            str(holdout),
            "--weighting",
            "ica",
            "--k",
            "2",
            "--refresh",
            "2",  # weights before step 1 and after step 10 of 20
            "--batch-size",
            "2",
            "--min-steps",
            "20",
            "--max-steps",
            "20",
            "--lora-r",
            "2",
            "--out",
            str(tmp_path / f"adapter-{tag}"),
            "--quiet",
        ]

    state = tmp_path / "adapter-crash-run" / "state"
    _run_until(
        args("crash"),
        tmp_path,
        lambda: any(int(c.name.split("-")[1]) >= 4 for c in _complete_checkpoints(state)),
        "a checkpoint at step 4 or later",
        tmp_path / "1.log",
    )
    assert not (tmp_path / "adapter-crash").exists(), "the killed run completed"
    _run_to_end(args("crash"), tmp_path, tmp_path / "2.log")
    assert not state.exists()  # removed once done
    _run_in_process(args("ref"), capsys)
    got = load_file(str(tmp_path / "adapter-crash" / "adapter_model.safetensors"))
    want = load_file(str(tmp_path / "adapter-ref" / "adapter_model.safetensors"))
    assert got.keys() == want.keys() and got
    for name, value in want.items():  # float32 rounding differs slightly after a reload
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
        assert np.abs(value).max() > 1e-3, name  # the adapter was trained
    crashed = read_parquet(tmp_path / "adapter-crash-run" / "weights.parquet")
    reference = read_parquet(tmp_path / "adapter-ref-run" / "weights.parquet")
    assert sorted(crashed) == sorted(reference) == ["id", "line", "weight_step0", "weight_step10"]
    for column in ("weight_step0", "weight_step10"):
        np.testing.assert_allclose(crashed[column], reference[column], rtol=1e-5, atol=1e-9)


def test_probe_resumes_after_sigkill(tiny_model_dir, tmp_path, capsys):
    """`dataplan probe` caches one trajectory per seed: killed after the first, the rerun keeps
    it and the summary equals an uninterrupted run's."""
    data = _task_file(tmp_path / "labelled.jsonl", n=24)

    def args(tag: str) -> list[str]:
        return [
            "probe",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(data),
            "--steps",
            "2,4,8",
            "--seeds",
            "4",
            "--validation",
            "6",
            "--batch-size",
            "2",
            "--lora-r",
            "2",
            "--run-dir",
            str(tmp_path / f"run-{tag}"),
            "--quiet",
        ]

    cache = tmp_path / "run-crash" / "probes"
    _run_until(
        args("crash"), tmp_path, lambda: bool(_jsons(cache)), "a cached seed", tmp_path / "1.log"
    )
    assert not (tmp_path / "run-crash" / "result.json").exists(), "the killed probe completed"
    snap = _snapshot(cache)
    assert len(snap) < 4, f"{len(snap)} of 4 seeds were cached before the kill"
    _run_to_end(args("crash"), tmp_path, tmp_path / "2.log")
    _assert_untouched(cache, snap)

    _run_in_process(args("ref"), capsys)
    crashed = json.loads((tmp_path / "run-crash" / "result.json").read_text())
    reference = json.loads((tmp_path / "run-ref" / "result.json").read_text())
    for key in ("rows", "by_depth", "before_training", "examples"):
        assert crashed[key] == reference[key], key
    assert len(crashed["rows"]) == 12
