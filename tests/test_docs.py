"""The documentation matches the repository: README's layout and links, no references to files
outside it, and every `dataplan <command>` the README shows is a real command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PACKAGE = ROOT / "src" / "dataplan"

# Files outside the repository that the docs once pointed at (case-sensitive: docs/methods.md is
# the project's own methods spec and is fine).
OUTSIDE = ("../shared", "METHODS.md", "FINDINGS.md")


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _code_blocks(text: str, languages: tuple[str, ...] | None = None) -> list[str]:
    """The code blocks of ``text`` (only those tagged with one of ``languages``, "" = none)."""
    blocks = re.findall(r"^```([^\n]*)\n(.*?)^```", text, flags=re.M | re.S)
    return [body for lang, body in blocks if languages is None or lang.strip() in languages]


def _layout_block() -> str:
    section = _readme().split("### Layout", 1)[1]
    return _code_blocks(section)[0]


def _layout_paths() -> list[str]:
    """Every path of the Layout tree, built from its indentation (two spaces a level)."""
    stack: list[tuple[int, str]] = []
    paths = []
    for line in _layout_block().splitlines():
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip(" "))
        name = line.split()[0]
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        path = parent + name
        if name.endswith("/"):
            stack.append((depth, path))
        paths.append(path)
    return paths


def test_layout_names_only_existing_paths():
    paths = _layout_paths()
    assert "src/dataplan/" in paths and "src/dataplan/training/objectives/base.py" in paths
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"README's Layout names paths that do not exist: {missing}"


def test_layout_names_every_package():
    named = {p.rstrip("/") for p in _layout_paths() if p.endswith("/")}
    packages = sorted(str(init.parent.relative_to(ROOT)) for init in PACKAGE.rglob("__init__.py"))
    unnamed = [p for p in packages if p not in named]
    assert not unnamed, f"packages missing from README's Layout: {unnamed}"


def test_readme_links_to_existing_docs_and_studies():
    text = _readme()
    linked = re.findall(r"\]\(((?:docs|studies)/[^)#\s]+)", text)
    quoted = re.findall(r"`((?:docs|studies)/[\w./-]+)", text)
    targets = sorted({t.rstrip(".") for t in linked + quoted})
    assert "docs/ground-truth.md" in targets and "docs/methods.md" in targets
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


def _documentation_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "src").rglob("*.py"))]


def test_no_references_to_files_outside_the_repository():
    found = []
    for path in _documentation_files():
        text = path.read_text(encoding="utf-8")
        for i, line in enumerate(text.splitlines(), 1):
            for ref in OUTSIDE:
                if ref in line:
                    found.append(f"{path.relative_to(ROOT)}:{i}: {ref}")
    assert not found, "references to files outside the repository:\n" + "\n".join(found)


def _readme_commands() -> list[tuple[str, ...]]:
    """``dataplan <command> [<subcommand>]`` as written in README's shell and output blocks
    (the Layout tree and the Python blocks hold prose and imports, not commands)."""
    layout = _layout_block()
    commands = set()
    for block in _code_blocks(_readme(), ("bash", "sh", "console", "")):
        if block == layout:
            continue
        for match in re.finditer(r"(?<![\w/.-])dataplan((?: +[a-z][a-z-]*(?![\w.]))+)", block):
            words = tuple(match.group(1).split())
            commands.add(words[:2])
    return sorted(commands)


@pytest.fixture(scope="module")
def app():
    from dataplan.cli.app import app

    return app


def test_readme_commands_exist(app):
    groups = {g.name for g in app.registered_groups}
    commands = _readme_commands()
    assert ("estimate",) in {c[:1] for c in commands} and ("scaling", "fit") in commands
    runner = CliRunner()
    bad = []
    for words in commands:
        argv = list(words if words[0] in groups else words[:1])
        result = runner.invoke(app, [*argv, "--help"])
        if result.exit_code != 0:
            bad.append(" ".join(argv))
    assert not bad, f"README shows commands that do not exist: {bad}"


def _cli_sections() -> dict[str, str]:
    """docs/cli.md split by command heading: ``{"dataplan probe fit": section text}``."""
    import html

    text = html.unescape((ROOT / "docs" / "cli.md").read_text(encoding="utf-8"))
    parts = re.split(r"^#+ `([^`]+)`\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _commands(command, words=("dataplan",)):
    """Every (name words, click command) under ``command``, groups included."""
    yield words, command
    for name, sub in getattr(command, "commands", {}).items():  # a group's subcommands
        if not sub.hidden:
            yield from _commands(sub, (*words, name))


def _first_sentence(help_text: str) -> str:
    """An option's help up to its first full stop, without Rich's escapes (``\\[``)."""
    return help_text.replace("\\[", "[").split(".")[0]


def test_cli_reference_lists_every_command_and_option(app):
    """docs/cli.md (``make docs``) names every command and every option's flags and help."""
    import typer.main

    sections = _cli_sections()
    commands = list(_commands(typer.main.get_command(app)))
    assert len(commands) > 20  # the walk reaches the subcommands
    missing = []
    for words, command in commands:
        name = " ".join(words)
        if len(words) == 1:  # the page's title stands for `dataplan` itself (only --help)
            continue
        if name not in sections:
            missing.append(name)
            continue
        for param in command.params:
            flags = [o for o in param.opts if o.startswith("--")]
            if flags and not any(re.search(rf"{f}(?![\w-])", sections[name]) for f in flags):
                missing.append(f"{name} {param.opts[0]}")
            elif param.help and _first_sentence(param.help) not in sections[name]:
                missing.append(f"{name} {param.opts[0]} (help text)")
    assert not missing, f"docs/cli.md is behind the CLI (run make docs): {missing}"
    assert len(sections) > 20 and "dataplan probe fit" in sections
