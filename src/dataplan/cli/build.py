"""Build a typer command's options from its config dataclass, so each option exists once.

:func:`config_command` registers ``run(cfg, out)`` as a command whose options are the config's
fields (nested dataclass fields flattened), with the help text of each field's docstring entry
(:func:`dataplan.options.attribute_help`), plus the output options every command shares
(``--json``, ``--quiet``). Invalid values fail in the config's own validation, before any model
loads. typer builds commands from function signatures; the signature here is synthesised from
the dataclass (``inspect.Signature``), which typer reads like a hand-written one.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from dataplan.options import attribute_help, cli_of


@dataclass(frozen=True)
class Output:
    """How a command prints: one JSON object (``--json``) or a table; progress unless quiet."""

    json: bool = False
    quiet: bool = False

    @property
    def progress(self) -> bool:
        return not (self.json or self.quiet)


JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else.")
]
"""``--json``, for the commands written by hand (without a config)."""

_OUTPUT_PARAMS = [
    inspect.Parameter(
        "json_out",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[
            bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else.")
        ],
    ),
    inspect.Parameter(
        "quiet",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[
            bool, typer.Option("--quiet", "-q", help="No progress bars or log lines.")
        ],
    ),
]

_SCALARS = (str, int, float, bool, Path)


@dataclass
class _Option:
    path: tuple[str, ...]  # field names from the top config down
    name: str  # the Python parameter name (unique)
    parameter: inspect.Parameter


def _option_type(hint: Any, parse: Callable[[str], Any] | None) -> tuple[Any, bool]:
    """The type typer is given, and whether the field may be None."""
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else str
    if parse is not None:
        return str, optional
    if hint in _SCALARS:
        return hint, optional
    if typing.get_origin(hint) is tuple and typing.get_args(hint) == (str, Ellipsis):
        return list[str], optional  # several positional arguments (cli(argument=True))
    raise TypeError(f"a config field of type {hint!r} needs cli(parse=...)")


def _default_text(value: Any) -> Any:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return value


PANEL_ORDER = (
    "Model",
    "Data",
    "Options",
    "Training",
    "Weighting",
    "Forecast",
    "Prompt",
    "Execution",
)


def _panel(cls: type, name: str, default: str) -> str:
    """The help panel of field ``name``: that of the class declaring it (``panel`` attribute)."""
    for klass in cls.__mro__:
        if name in inspect.get_annotations(klass):
            return klass.__dict__.get("panel", default)
    return default


def _options(
    cls: type,
    path: tuple[str, ...] = (),
    skip: frozenset[str] = frozenset(),
    panel: str = "Options",
) -> list[_Option]:
    from rich.markup import escape

    hints = typing.get_type_hints(cls)
    # The help is rich markup: a literal "[embeddings]" would be read as a style tag.
    helps = {name: escape(text) for name, text in attribute_help(cls).items()}
    out: list[_Option] = []
    for f in dataclasses.fields(cls):
        meta = cli_of(f)
        if not f.init or meta.hidden or f.name in skip:
            continue
        if meta.nested:
            nested = hints[f.name]
            out += _options(nested, (*path, f.name), panel=nested.__dict__.get("panel", panel))
            continue
        kind, optional = _option_type(hints[f.name], meta.parse)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = inspect.Parameter.empty
        if meta.parse is not None and default is not inspect.Parameter.empty:
            default = None if default is None else _default_text(default)
        flag = meta.flag or "--" + f.name.replace("_", "-")
        on_by_default = kind is bool and meta.flag is None and default is True
        decls = [f"{flag}/--no-{flag[2:]}"] if on_by_default else [flag]
        if meta.short:
            decls.append(meta.short)
        decls.extend(meta.aliases)
        annotation = kind | None if optional or default is None else kind
        extra: dict[str, Any] = {"metavar": meta.metavar} if meta.metavar else {}
        if meta.argument:
            option = typer.Argument(help=helps.get(f.name, ""), **extra)
        else:
            option = typer.Option(
                *decls,
                help=helps.get(f.name, ""),
                rich_help_panel=_panel(cls, f.name, panel),
                show_default=default is not None and default is not False,
                **extra,
            )
        parameter = inspect.Parameter(
            "_".join((*path, f.name)),
            inspect.Parameter.KEYWORD_ONLY,
            default=default,
            annotation=Annotated[annotation, option],
        )
        out.append(_Option((*path, f.name), parameter.name, parameter))
    rank = {p: i for i, p in enumerate(PANEL_ORDER)}
    return sorted(out, key=lambda o: rank.get(_option_panel(o), len(rank)))


def _flags(option: _Option) -> list[str]:
    info = typing.get_args(option.parameter.annotation)[1]
    decls = getattr(info, "param_decls", None) or ()
    return [d for decl in decls for d in decl.split("/") if d.startswith("-")]


def _option_panel(option: _Option) -> str:
    info = typing.get_args(option.parameter.annotation)[1]
    return getattr(info, "rich_help_panel", None) or "Options"


def build_config(cls: type, values: dict[tuple[str, ...], Any], path: tuple[str, ...] = ()) -> Any:
    """An instance of ``cls`` from option values keyed by field path (parsed, nested built)."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta = cli_of(f)
        key = (*path, f.name)
        if meta.nested:
            kwargs[f.name] = build_config(hints[f.name], values, key)
        elif key in values:
            value = values[key]
            if meta.parse is not None and isinstance(value, str):
                value = meta.parse(value)
            if isinstance(value, Path):
                value = str(value)
            if isinstance(value, list):
                value = tuple(str(v) for v in value)
            kwargs[f.name] = value
    return cls(**kwargs)


def config_command(
    app: typer.Typer,
    name: str,
    config: type,
    *,
    fixed: dict[str, Any] | None = None,
    skip: frozenset[str] = frozenset(),
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``run(cfg, out: Output)`` as command ``name`` with ``config``'s options.

    Args:
        fixed: config fields set by the command itself (not options).
        skip: config fields not offered (their defaults apply).
    """

    def register(run: Callable[..., None]) -> Callable[..., None]:
        app.command(name)(_command(name, config, run, fixed, skip))
        return run

    return register


def config_callback(
    group: typer.Typer, name: str, config: type
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``run(cfg, out: Output)`` as what the command group ``name`` itself does when
    no subcommand is named (``dataplan probe --model …`` beside ``dataplan probe fit …``).

    Every field of ``config`` needs a default: the group's options are parsed before a
    subcommand runs, and are then ignored.
    """

    def register(run: Callable[..., None]) -> Callable[..., None]:
        inner = _command(name, config, run, None, frozenset())

        def callback(ctx: typer.Context, **kwargs: Any) -> None:
            if ctx.invoked_subcommand is None:
                inner(**kwargs)

        params = [
            inspect.Parameter(
                "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context
            ),
            *inner.__signature__.parameters.values(),  # type: ignore[attr-defined]
        ]
        callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        callback.__annotations__ = {p.name: p.annotation for p in params}
        callback.__doc__ = run.__doc__
        group.callback(invoke_without_command=True)(callback)
        return run

    return register


def _command(
    name: str,
    config: type,
    run: Callable[..., None],
    fixed: dict[str, Any] | None,
    skip: frozenset[str],
) -> Callable[..., None]:
    """A function typer turns into a command: ``config``'s options, ``--json`` and ``--quiet``."""
    fixed_values = dict(fixed or {})
    options = _options(config, skip=frozenset(skip) | frozenset(fixed_values))
    by_name = {o.name: o.path for o in options}
    flags = [f for o in options for f in _flags(o)] + ["--json", "--quiet", "-q"]
    clash = sorted({f for f in flags if flags.count(f) > 1})
    if clash:  # two fields (e.g. of two nested groups) would answer to one flag
        raise TypeError(f"command {name!r}: option {clash[0]} is declared twice")

    def command(**kwargs: Any) -> None:
        out = Output(json=kwargs.pop("json_out"), quiet=kwargs.pop("quiet"))
        from dataplan.cli.output import console, output_rank, setup_logging

        setup_logging(not out.progress)
        console.quiet = not output_rank()  # torchrun: one table, from rank 0
        values = {by_name[k]: v for k, v in kwargs.items()}
        values.update({(k,): v for k, v in fixed_values.items()})
        if "progress" in {f.name for f in dataclasses.fields(config)}:
            values[("progress",)] = out.progress
        run(build_config(config, values), out)

    params = [o.parameter for o in options] + _OUTPUT_PARAMS
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = run.__doc__
    command.__name__ = run.__name__
    return command
