"""The built-in task suite: registry, fixed-seed splits, export; no download (cache fixtures)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from dataplan.data.loading import load_examples
from dataplan.errors import ConfigError
from dataplan.tasks import registry
from dataplan.tasks.registry import TASKS, get_task, load_task, split_task


@pytest.fixture
def bigbench_cache(tmp_path, monkeypatch):
    """A cache holding an already-extracted sports_understanding task.json (40 examples)."""
    monkeypatch.setenv("DATAPLAN_CACHE", str(tmp_path / "cache"))
    task = {
        "task_prefix": "Plausible?",
        "examples": [
            {
                "input": f"statement {k}",
                "target_scores": {"plausible": k % 2, "implausible": 1 - k % 2},
            }
            for k in range(40)
        ],
    }
    path = tmp_path / "cache" / "bigbench" / "tasks" / "sports_understanding" / "task.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(task))
    return path


def test_suite_has_32_tasks_across_kinds_and_the_papers_tasks():
    """The suite as documented: 25 BIG-bench tasks (12 of them the CoS-Low paper's) and 7
    reasoning-gym generators."""
    assert len(TASKS) == 32
    kinds = {t.kind for t in TASKS.values()}
    assert kinds == {
        "classification",
        "multiple_choice",
        "arithmetic",
        "word_problem",
        "generation",
    }
    assert sum(t.in_paper for t in TASKS.values()) == 12
    sources = [t.source for t in TASKS.values()]
    assert (sources.count("bigbench"), sources.count("reasoning_gym")) == (25, 7)
    assert all(t.pool_size <= 2500 for t in TASKS.values())
    assert get_task("demo").name == "sports_understanding"
    with pytest.raises(ConfigError, match="unknown task"):
        get_task("nope")


def test_bigbench_split_is_fixed_and_disjoint(bigbench_cache):
    test = load_task("demo", "test")
    pool = load_task("demo", "pool")
    assert len(test) == 20 and len(pool) == 20  # a small task keeps half for testing
    assert not {e.id for e in test} & {e.id for e in pool}
    assert [e.id for e in load_task("demo", "test")] == [e.id for e in test]  # deterministic
    assert test[0].choices == ("plausible", "implausible")
    assert len(load_task("demo", "all")) == 40


def test_split_sizes_follow_spec():
    spec = registry.TaskSpec("toy", "bigbench", "toy", "classification", test_size=10, pool_size=25)
    examples = [registry.Example(id=str(k), prompt="p", answer="a") for k in range(100)]
    parts = split_task(spec, examples)
    assert len(parts["test"]) == 10 and len(parts["pool"]) == 25


@pytest.mark.skipif(
    importlib.util.find_spec("reasoning_gym") is None, reason="reasoning-gym not installed"
)
def test_reasoning_gym_task_is_deterministic(monkeypatch):
    spec = get_task("basic_arithmetic")
    monkeypatch.setitem(
        TASKS,
        "basic_arithmetic",
        registry.TaskSpec(**{**spec.to_dict(), "test_size": 5, "pool_size": 7}),
    )
    a = load_task("basic_arithmetic", "pool")
    b = load_task("basic_arithmetic", "pool")
    assert len(a) == 7 and [(e.prompt, e.answer) for e in a] == [(e.prompt, e.answer) for e in b]
    assert all(e.answer for e in a)


def test_tasks_cli_list_and_export(bigbench_cache, tmp_path, capsys):
    from test_cli import run_main

    code, out, _ = run_main(["tasks", "list", "--json"], capsys)
    assert code == 0 and len(json.loads(out)["tasks"]) == len(TASKS)
    for suffix in ("jsonl", "parquet", "csv"):
        dest = tmp_path / f"demo.{suffix}"
        code, out, _ = run_main(
            ["tasks", "export", "demo", "--out", str(dest), "--split", "test", "--json"], capsys
        )
        assert code == 0 and json.loads(out)["examples"] == 20
        back = load_examples(dest)
        assert [e.id for e in back] == [e.id for e in load_task("demo", "test")]
        if suffix != "csv":
            assert back[0].choices == ("plausible", "implausible")
    code, _, err = run_main(["tasks", "export", "demo", "--out", str(tmp_path / "x.txt")], capsys)
    assert code == 2 and "x.txt" in err


def test_corrupt_answers_is_seeded_and_always_wrong():
    from dataplan.data.loading import Example
    from dataplan.tasks.noise import corrupt_answers

    examples = [
        Example(id=str(i), prompt="p", answer="a", choices=("a", "b", "c")) for i in range(10)
    ]
    examples += [Example(id=f"n{i}", prompt="p", answer=str(10 * i)) for i in range(10)]
    noisy, bad = corrupt_answers(examples, 0.3, seed=0)
    assert len(bad) == 6 and corrupt_answers(examples, 0.3, seed=0) == (noisy, bad)
    for before, after in zip(examples, noisy, strict=True):
        if before.id in bad:
            assert after.answer != before.answer
            if before.choices:
                assert after.answer in before.choices
            else:
                assert 1 <= int(after.answer) - int(before.answer) <= 9
        else:
            assert after == before
    assert corrupt_answers(examples, 0.3, seed=1)[1] != bad
