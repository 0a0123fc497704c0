"""What ``exec-runtime --help``, ``COMMAND --help`` and ``--version`` tell a user: no
internal docstring, and every option of ``serve`` and ``run`` with its default."""

from __future__ import annotations

import argparse
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from exec_runtime import ServerConfig
from exec_runtime._cli.main import _build_parser, _shown
from exec_runtime._cli.main import main as cli_main
from exec_runtime._cli.serve_options import OPTIONS, env_name

ROOT = Path(__file__).resolve().parents[2]


def help_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        cli_main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def subparser(name: str) -> argparse.ArgumentParser:
    for action in _build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]  # type: ignore[no-any-return]
    raise AssertionError("no subcommands")


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["--version"])
    assert exited.value.code == 0
    installed = metadata.version("exec-runtime")
    assert capsys.readouterr().out == f"exec-runtime {installed}\n"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert installed == project["version"]


def test_the_top_level_help_is_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(capsys)
    for command in ("serve", "run", "schema", "--version"):
        assert command in text
    # Not the module's docstring (it used to say "main(argv) -> int so tests can call it").
    assert "main(argv)" not in text and "``" not in text
    assert "``" not in help_of(capsys, "run")


@pytest.mark.parametrize("command", ["serve", "run"])
def test_every_option_shows_its_default(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = [
        action.option_strings[-1]
        for action in subparser(command)._actions
        if action.option_strings
        and action.dest != "help"
        and not re.search(r"\bdefault\b", action.help or "")
    ]
    assert not missing
    help_of(capsys, command)  # and argparse can render it (a stray % would raise)


def test_serves_help_shows_the_real_defaults_and_variables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = " ".join(help_of(capsys, "serve").split())  # unwrap argparse's lines
    assert "--detached-ttl SECONDS how long a session whose connection dropped" in text
    assert "($EXEC_RUNTIME_DETACHED_TTL); default 30 s" in text
    assert "($EXEC_RUNTIME_CLOSED_TTL); default 30 s" in text
    assert "($EXEC_RUNTIME_RETAIN_BYTES); default 1048576 (1 MiB)" in text
    defaults = ServerConfig()
    for action in subparser("serve")._actions:
        if action.dest in OPTIONS:
            assert f"(${env_name(action.dest)}); default " in (action.help or ""), action.dest
        if action.dest in OPTIONS and action.option_strings[0] != "--no-orphan-watchdog":
            value = getattr(defaults, action.dest, None)
            if value is not None and not isinstance(value, bool) and "memory" not in (
                action.help or ""
            ):
                assert (action.help or "").endswith(f"default {_shown(value)}"), action.dest
