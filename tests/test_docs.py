"""Every command has help text and appears in the README (sqlite-utils' test_docs idea)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from mmsearch.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
COMMANDS = sorted(get_command(app).commands)  # type: ignore[attr-defined]


def test_the_commands_are_the_ones_we_document() -> None:
    assert COMMANDS == ["eval", "index", "info", "models", "query", "serve", "train"]


@pytest.mark.parametrize("command", COMMANDS)
def test_command_has_help_and_is_in_the_readme(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0
    cmd = get_command(app).commands[command]  # type: ignore[attr-defined]
    assert cmd.help and len(cmd.help) > 40, f"{command} needs help text that teaches"
    for param in cmd.params:
        if param.name != "help":
            assert getattr(param, "help", None), f"{command} {param.name} has no help"
    assert re.search(rf"mmsearch {command}\b", README), f"README does not show `mmsearch {command}`"


def test_readme_set_up_and_test_command_are_what_ci_runs() -> None:
    """CI runs the README's blocks themselves (found by their markers), so they cannot drift apart."""
    ci = (ROOT / ".ci" / "run").read_text()
    for marker in ("setup-command", "test-command"):
        block = re.search(rf"<!-- {marker} -->\s*```(?:sh|bash)?\n(.+?)```", README, re.S)
        assert block and block.group(1).strip(), f"README must mark a block with <!-- {marker} -->"
        assert f"block {marker}" in ci, f".ci/run does not run the README's {marker} block"
    setup = re.search(r"<!-- setup-command -->\s*```(?:sh|bash)?\n(.+?)```", README, re.S)
    assert setup and "chromium" in setup.group(1) and ". .venv/bin/activate" in setup.group(1)
