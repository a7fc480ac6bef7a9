"""Option groups shared by every command, declared once, and how a config field meets the CLI.

A command's settings are a dataclass (its *config*); the CLI builds the command's options from
its fields (:mod:`dataplan.cli.build`), so each option exists in one place. The help text of a
field is its entry in the ``Attributes:`` section of the class docstring that declares it (which
also documents the Python API); ``metadata=cli(...)`` on a field adds what the CLI needs beyond
its name and type: another flag name, a short alias, a parser for comma lists, or nothing at all
(``cli(hidden=True)``: Python only).

The groups below are mixed into every config that needs them (``kw_only`` dataclasses, so they
combine in any order): the model and where it runs, how prompts are formatted, where the examples
come from.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from dataplan.data.formatting import PromptSettings
    from dataplan.data.loading import Fields, PreferenceFields
    from dataplan.data.sources import DataSource
    from dataplan.workflows.experiment import ModelSpec

CLI_KEY = "dataplan.cli"
BUILTIN_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Cli:
    """How a config field appears on the command line.

    Attributes:
        flag: the option's name (default ``--`` + the field name with dashes).
        short: a one-letter alias, e.g. ``-m``.
        aliases: more names for the option (e.g. one that ``torchrun``'s own parser cannot
            mistake for an abbreviation of its options, as it does ``--n``).
        parse: for fields the CLI takes as text (comma lists): text → value.
        hidden: not on the command line (Python API only).
        nested: a dataclass field whose own fields become options.
        metavar: what the help shows as the value.
        argument: a positional argument instead of an option.
    """

    flag: str | None = None
    short: str | None = None
    aliases: tuple[str, ...] = ()
    parse: Callable[[str], Any] | None = None
    hidden: bool = False
    nested: bool = False
    metavar: str | None = None
    argument: bool = False


def cli(**kwargs: Any) -> dict[str, Cli]:
    """Field metadata: ``field(default=..., metadata=cli(flag="--confidence"))``."""
    return {CLI_KEY: Cli(**kwargs)}


def cli_of(f: dataclasses.Field) -> Cli:
    return f.metadata.get(CLI_KEY, Cli())


_ENTRY = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*(?:\s*,\s*[A-Za-z_][A-Za-z0-9_]*)*):\s*(.*)$")


def attribute_help(cls: type) -> dict[str, str]:
    """Field name → help text, from the ``Attributes:`` sections of ``cls`` and its bases.

    An entry ``a, b: text`` documents both fields; continuation lines are indented deeper.
    """
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = inspect.getdoc(klass) if klass.__doc__ else None
        if not doc or "Attributes:" not in doc:
            continue
        section = doc.split("Attributes:", 1)[1].splitlines()
        names: list[str] = []
        indent = None
        for line in section:
            if not line.strip():
                if names:
                    continue
                continue
            depth = len(line) - len(line.lstrip())
            if indent is None:
                indent = depth
            if depth < indent:
                break
            m = _ENTRY.match(line)
            if m and depth == indent:
                names = [n.strip() for n in m.group(2).split(",")]
                for n in names:
                    out[n] = m.group(3).strip()
            elif names:
                for n in names:
                    out[n] = (out[n] + " " + line.strip()).strip()
    return out


@dataclass(kw_only=True)
class ModelOptions:
    """The model and where it runs.

    Attributes:
        model: Built-in name (smollm2-135m-instruct), local folder or hub id.
        device: auto (CUDA, else CPU), cpu, cuda, cuda:1, …
        dtype: auto (bf16 on CUDA, else fp32), float32, bfloat16, float16.
        trust_remote_code: Allow the model's own code (off unless given).
    """

    panel: ClassVar[str] = "Model"

    model: str = field(default=BUILTIN_MODEL, metadata=cli(short="-m"))
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = field(default=False, metadata=cli(flag="--trust-remote-code"))

    def check_model(self) -> None:
        """A missing model folder is reported as such before anything else is read."""
        if self.model:
            from dataplan.models.loading import check_model_reference

            check_model_reference(self.model)

    @property
    def spec(self) -> ModelSpec:
        from dataplan.workflows.experiment import ModelSpec

        return ModelSpec(self.model, self.device, self.dtype, self.trust_remote_code)


@dataclass(kw_only=True)
class PromptOptions:
    """How prompts are formatted.

    Attributes:
        chat_template: Apply the model's chat template when it has one.
        system_prompt: System message (default: the template's own).
    """

    panel: ClassVar[str] = "Prompt"

    chat_template: bool = True
    system_prompt: str | None = None

    @property
    def prompts(self) -> PromptSettings:
        from dataplan.data.formatting import PromptSettings

        return PromptSettings(self.chat_template, self.system_prompt)


@dataclass(kw_only=True)
class FieldOptions:
    """The names of the fields of a data file.

    Attributes:
        prompt_field: Field holding the prompt.
        answer_field: Field holding the answer.
        id_field: Field holding an example id (optional in the data).
        split: Split of a datasets folder.
    """

    panel: ClassVar[str] = "Data"

    prompt_field: str = "prompt"
    answer_field: str = "answer"
    id_field: str = "id"
    split: str | None = None

    @property
    def fields(self) -> Fields:
        from dataplan.data.loading import Fields

        return Fields(prompt=self.prompt_field, answer=self.answer_field, id=self.id_field)


@dataclass(kw_only=True)
class PairFieldOptions:
    """The fields of preference pairs (the prompt and id fields are --prompt-field, --id-field).

    Attributes:
        chosen_field: Field holding the chosen (preferred) response of a preference pair.
        rejected_field: Field holding the rejected response of a preference pair.
    """

    panel: ClassVar[str] = "Data"

    chosen_field: str = "chosen"
    rejected_field: str = "rejected"

    def pair_fields(self, prompt_field: str, id_field: str) -> PreferenceFields:
        from dataplan.data.loading import PreferenceFields

        return PreferenceFields(prompt_field, self.chosen_field, self.rejected_field, id_field)


@dataclass(kw_only=True)
class DataOptions(FieldOptions):
    """Where the examples come from: a suite task or a file.

    Attributes:
        task: A built-in task instead of --data (`dataplan tasks list`; demo = sports_understanding).
        data: Task file: JSONL, CSV, Parquet, BIG-bench task.json or a datasets folder.
    """

    panel: ClassVar[str] = "Data"

    task: str | None = None
    data: str | None = None

    @property
    def source(self) -> DataSource:
        from dataplan.data.sources import DataSource

        return DataSource(
            task=self.task,
            data=self.data,
            prompt_field=self.prompt_field,
            answer_field=self.answer_field,
            id_field=self.id_field,
            split=self.split,
        )


@dataclass(kw_only=True)
class RunOptions:
    """How a command reports.

    Attributes:
        progress: Show progress bars and log lines (the CLI turns it off with --quiet or --json).
    """

    progress: bool = field(default=True, metadata=cli(hidden=True))


@dataclass(kw_only=True)
class ExecutorOptions:
    """Where the independent fine-tunes of a sweep run (curve points, scaling runs, probes).

    Attributes:
        executor: local (one after another in this process) or ray (each point a Ray task with
            its own resources, run in parallel; pip install 'dataplan[ray]').
        ray_address: The Ray cluster to join (with --executor ray): an address, or auto for the
            cluster this machine belongs to; default: start a local Ray on this machine's CPUs.
        cpus_per_point: CPU threads of each Ray task.
        gpus_per_point: GPUs of each Ray task (fractions share a GPU).
    """

    panel: ClassVar[str] = "Execution"

    executor: str = "local"
    ray_address: str | None = None
    cpus_per_point: int = 1
    gpus_per_point: float = 0.0

    def check_executor(self) -> None:
        """Raise :class:`ConfigError` on invalid execution settings."""
        from dataplan.errors import ConfigError

        if self.executor not in ("local", "ray"):
            raise ConfigError(f"--executor must be local or ray, got {self.executor!r}")
        if self.cpus_per_point < 1:
            raise ConfigError(f"--cpus-per-point must be at least 1, got {self.cpus_per_point}")
        if not self.gpus_per_point >= 0:
            raise ConfigError(f"--gpus-per-point must be >= 0, got {self.gpus_per_point}")
        if self.executor == "local" and self.ray_address is not None:
            raise ConfigError("--ray-address needs --executor ray")


@dataclass(kw_only=True)
class MemoryOptions:
    """How much memory the per-example passes may use.

    Attributes:
        max_memory: Memory budget of the per-example passes (gradients, scores), e.g. 4GB,
            3.5GiB or 800MB: batches are sized so that the model's weights, stored results and
            one batch's activations fit (measured on the longest example; the Python runtime,
            or a GPU's CUDA context, comes on top). Default: fixed batch sizes.
    """

    panel: ClassVar[str] = "Execution"

    max_memory: str | None = None

    @property
    def memory_budget(self) -> int | None:
        """``max_memory`` in bytes (``None``: no budget); raises :class:`ConfigError`."""
        from dataplan.compute.memory import parse_memory

        return None if self.max_memory is None else parse_memory(self.max_memory)


def group_values(config: Any, *groups: type) -> dict[str, Any]:
    """The values of ``config``'s fields that belong to the option ``groups`` (mixin classes):
    to pass a command's shared options on to another config."""
    names = {f.name for g in groups for f in dataclasses.fields(g)}
    return {n: getattr(config, n) for n in names}


def ints(what: str) -> Callable[[str], tuple[int, ...]]:
    """A parser of the comma-separated integers of option ``what``."""
    from dataplan.parsing import parse_ints

    return lambda text: parse_ints(text, what)


def floats(what: str) -> Callable[[str], tuple[float, ...]]:
    """A parser of the comma-separated finite numbers of option ``what``."""
    from dataplan.parsing import parse_floats

    return lambda text: parse_floats(text, what)


def names(what: str) -> Callable[[str], tuple[str, ...]]:
    """A parser of the comma-separated names of option ``what``."""
    from dataplan.parsing import parse_names

    return lambda text: parse_names(text, what)
