"""Where a command's examples come from: a built-in suite task or a file, resolved in one place.

Every command that reads labelled examples takes the same options — ``--task NAME`` or
``--data FILE`` (with ``--prompt-field``, ``--answer-field``, ``--id-field`` renames and
``--split`` for a ``datasets`` folder) — and resolves them here, so renames are honoured
everywhere and ``--task`` works wherever ``--data`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataplan.data.loading import Example, Fields, load_examples
from dataplan.errors import ConfigError, InputError

TEST_SPLIT_MAX = 300  # a file without --test-data: at most this many examples are held out


@dataclass(frozen=True)
class DataSource:
    """A suite task or a data file, and the names of its fields.

    Attributes:
        task: a built-in task (``dataplan tasks list``), or None.
        data: a JSONL/CSV/Parquet file, BIG-bench ``task.json`` or ``datasets`` folder, or None.
        prompt_field, answer_field, id_field: the fields to read from ``data``.
        split: the split of a ``datasets`` folder.
    """

    task: str | None = None
    data: str | None = None
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    id_field: str = "id"
    split: str | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.task is None):
            raise ConfigError("give exactly one of --data FILE or --task NAME")

    @property
    def fields(self) -> Fields:
        return Fields(prompt=self.prompt_field, answer=self.answer_field, id=self.id_field)

    @property
    def label(self) -> str:
        """A short name for file names and titles: the task's name or the file's stem."""
        if self.task is not None:
            from dataplan.tasks.registry import get_task

            return get_task(self.task).name
        return Path(self.data or "").stem

    def task_kind(self) -> tuple[str, str | None]:
        """``(the task's own metric, its kind)``; a file: ``("exact_match", None)``."""
        if self.task is None:
            return "exact_match", None
        from dataplan.tasks.registry import get_task

        spec = get_task(self.task)
        return spec.metric, spec.kind

    def load(self, *, require_answer: bool = False) -> list[Example]:
        """Every example: a task's training pool, or the whole file."""
        if self.task is not None:
            from dataplan.tasks.registry import load_task

            return load_task(self.task, "pool")
        return load_examples(
            self.data or "", fields=self.fields, require_answer=require_answer, split=self.split
        )

    def splits(
        self, test_data: str | None = None, max_test: int | None = None
    ) -> tuple[list[Example], list[Example]]:
        """(training pool, held-out test set) of labelled examples.

        A task has its fixed-seed splits. A file is the pool and ``test_data`` the test set; or,
        without ``test_data``, min(300, half) of the file is held out by a fixed permutation
        [our choice]. ``max_test`` keeps the first test examples.
        """
        if self.task is not None:
            if test_data is not None:
                raise ConfigError("--test-data goes with --data")
            from dataplan.tasks.registry import load_task

            pool, test = load_task(self.task, "pool"), load_task(self.task, "test")
        else:
            examples = self.load(require_answer=True)
            if test_data is not None:
                pool = examples
                test = load_examples(
                    test_data, fields=self.fields, require_answer=True, default_split=False
                )
            else:
                order = np.random.default_rng(0).permutation(len(examples))
                n_test = min(TEST_SPLIT_MAX, len(examples) // 2)
                test = [examples[i] for i in order[:n_test]]
                pool = [examples[i] for i in order[n_test:]]
        if max_test is not None:
            test = test[:max_test]
        if not test or not pool:  # e.g. a one-example file: nothing to train on or to test
            which = "test set" if not test else "training pool"
            raise InputError(
                f"an empty {which} ({len(pool)} pool, {len(test)} test examples): give more "
                "examples or --test-data",
                path=test_data if not test and test_data else self.data,
            )
        return pool, test
