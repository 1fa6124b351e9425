"""The docs are tested: every command of the CLI has help text with an example and is
shown in README.md, and the README's quick start is the two make commands."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from ticker.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
COMMANDS = sorted(cli.commands)


def readme() -> str:
    assert README.exists(), "README.md is missing at the top of the repository"
    return README.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_in_the_readme(name: str) -> None:
    assert re.search(rf"\bticker\b[^\n]*?\b{re.escape(name)}\b", readme()), (
        f"`ticker {name}` is not shown in README.md"
    )


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_an_example(name: str) -> None:
    command: click.Command = cli.commands[name]
    assert command.help, f"ticker {name} has no help text"
    assert "Example" in command.help, f"ticker {name} --help shows no example"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"ticker {name} {param.opts[0]} has no help text"


def test_the_readme_opens_with_its_purpose_and_the_quick_start() -> None:
    text = readme()
    assert text.startswith("# ")
    assert "make run" in text and "make test" in text
