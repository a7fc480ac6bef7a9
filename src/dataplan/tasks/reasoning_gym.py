"""Examples from ``reasoning-gym`` generators (optional dependency: ``pip install dataplan[suite]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataplan.data.loading import Example
from dataplan.errors import DataplanError

if TYPE_CHECKING:
    from dataplan.tasks.registry import TaskSpec


def generate(spec: TaskSpec, size: int, *, seed: int) -> list[Example]:
    """``size`` examples of the generator ``spec.path`` with ``seed`` (deterministic)."""
    try:
        import reasoning_gym
    except ImportError:
        raise DataplanError(
            f"task {spec.name!r} needs reasoning-gym: pip install 'dataplan[suite]'"
        ) from None
    dataset = reasoning_gym.create_dataset(spec.path, size=size, seed=seed, **spec.generator)
    return [
        Example(
            id=str(k),
            prompt=item["question"],
            answer=str(item["answer"]),
            source=f"reasoning_gym:{spec.path}",
            line=k + 1,
        )
        for k, item in enumerate(dataset)
    ]
