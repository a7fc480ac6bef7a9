"""Built-in tasks by name. A plain dict; issue "ground truth" grows it into a suite."""

from __future__ import annotations

from dataclasses import dataclass

from dataplan.data.loading import Example, load_examples
from dataplan.errors import ConfigError


@dataclass(frozen=True)
class TaskSpec:
    """A built-in task: where its examples come from and how they are scored."""

    name: str
    source: str  # "bigbench"
    path: str  # the task's folder inside BIG-bench's benchmark_tasks
    description: str = ""


TASKS: dict[str, TaskSpec] = {
    "sports_understanding": TaskSpec(
        "sports_understanding",
        "bigbench",
        "sports_understanding",
        "Is a sports statement plausible? 1,000 examples; one of the CoS-Low paper's tasks.",
    ),
}
ALIASES = {"demo": "sports_understanding"}


def get_task(name: str) -> TaskSpec:
    key = ALIASES.get(name, name)
    if key not in TASKS:
        raise ConfigError(f"unknown task {name!r}; built-in tasks: {', '.join(sorted(TASKS))}")
    return TASKS[key]


def load_task(name: str) -> list[Example]:
    """Every example of a built-in task (downloading and extracting its source once)."""
    spec = get_task(name)
    from dataplan.tasks.bigbench import ensure_tasks

    path = ensure_tasks([spec.path])[spec.path]
    return load_examples(path)
