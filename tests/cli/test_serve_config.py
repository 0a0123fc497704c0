"""``serve --config FILE``, ``EXEC_RUNTIME_<OPTION>`` and flags, each on top of the one
before (``exec_runtime/_cli/serve_options.py``): the loader on real files, and a real
``serve`` reading a file and its environment."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import exec_runtime
from exec_runtime import ServerConfig
from exec_runtime._cli.main import _build_parser, serve_options
from exec_runtime._cli.main import main as cli_main
from exec_runtime._cli.serve_options import OPTIONS, ConfigError, consumed_variables
from tests.support.daemon_process import Daemon

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "exec-runtime.example.toml"


def options(*argv: str, environ: dict[str, str] | None = None) -> Any:
    return serve_options(_build_parser().parse_args(["serve", *argv]), environ or {})


def config_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "exec-runtime.toml"
    path.write_text(text)
    return str(path)


def error_of(*argv: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as raised:
        options(*argv, environ=environ)
    return str(raised.value)


# --- layering -----------------------------------------------------------------------------


def test_the_environment_goes_over_the_file_and_flags_over_both(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        'max_sessions = 10\nclosed_ttl = 1\nlisten = "ws://127.0.0.1:7000"\n'
        'log_format = "json"\nsandbox_mechanisms = ["landlock"]\n',
    )
    environ = {"EXEC_RUNTIME_MAX_SESSIONS": "20", "EXEC_RUNTIME_CLOSED_TTL": "2"}
    got = options("--config", path, "--closed-ttl", "3", environ=environ)
    assert got.config.listen == "ws://127.0.0.1:7000"  # the file alone
    assert got.config.sandbox_mechanisms == ("landlock",)
    assert got.log_format == "json"
    assert got.config.max_sessions == 20  # the environment over the file
    assert got.config.closed_ttl == 3.0  # the flag over both
    # Whatever no layer names keeps its default.
    assert got.config.detached_ttl == ServerConfig().detached_ttl == 30.0


def test_the_config_file_may_come_from_the_environment(tmp_path: Path) -> None:
    path = config_file(tmp_path, "max_sessions = 10\n")
    assert options(environ={"EXEC_RUNTIME_CONFIG": path}).config.max_sessions == 10
    other = tmp_path / "other.toml"
    other.write_text("max_sessions = 11\n")
    got = options("--config", str(other), environ={"EXEC_RUNTIME_CONFIG": path})
    assert got.config.max_sessions == 11


def test_variables_in_every_type(tmp_path: Path) -> None:
    got = options(
        environ={
            "EXEC_RUNTIME_ORPHAN_WATCHDOG": "off",
            "EXEC_RUNTIME_ALLOW_UNAUTHENTICATED": "TRUE",
            "EXEC_RUNTIME_SANDBOX_MECHANISMS": "none",
            "EXEC_RUNTIME_DETACHED_TTL": "inf",
            "EXEC_RUNTIME_RETAIN_BYTES": "4096",
            "EXEC_RUNTIME_LOG_LEVEL": "debug",
            "EXEC_RUNTIME_DEFAULT_SANDBOX": "read-only",
            "EXEC_RUNTIME_MAX_SESSIONS": "",  # empty: unset
            "EXEC_RUNTIME_CODEX": "/not/an/option",  # not ours to judge: ignored
        }
    )
    assert got.config.orphan_watchdog is False
    assert got.config.allow_unauthenticated is True
    assert got.config.sandbox_mechanisms == ()
    assert got.config.detached_ttl == float("inf")
    assert got.config.retain_bytes == 4096
    assert got.config.default_sandbox == "read-only"
    assert got.config.max_sessions == ServerConfig().max_sessions
    assert got.log_level == "DEBUG"
    mechanisms = {"EXEC_RUNTIME_SANDBOX_MECHANISMS": " landlock , bwrap"}
    assert options(environ=mechanisms).config.sandbox_mechanisms == ("landlock", "bwrap")


def test_relative_paths_in_a_file_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = config_file(tmp_path / "etc", 'tls_cert = "cert.pem"\nbwrap_path = "/usr/bin/bwrap"\n')
    got = options("--config", path)
    assert got.config.tls_cert == str(tmp_path / "etc" / "cert.pem")
    assert got.config.bwrap_path == "/usr/bin/bwrap"
    # A flag's relative path stays relative to the current directory, as ever.
    assert options("--config", path, "--tls-cert", "c.pem").config.tls_cert == "c.pem"


def test_the_token_from_a_file_named_by_any_layer(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    path = config_file(tmp_path, 'token_file = "token"\n')
    assert options("--config", path).config.token == "from-file"
    # $EXEC_RUNTIME_TOKEN (the environment layer) goes over the file's token_file ...
    environ = {"EXEC_RUNTIME_TOKEN": "from-env"}
    assert options("--config", path, environ=environ).config.token == "from-env"
    # ... and --token-file over both.
    flag = tmp_path / "flag-token"
    flag.write_text("from-flag")
    got = options("--config", path, "--token-file", str(flag), environ=environ)
    assert got.config.token == "from-flag"
    both = {"EXEC_RUNTIME_TOKEN": "x", "EXEC_RUNTIME_TOKEN_FILE": str(secret)}
    assert "not both" in error_of(environ=both)
    assert "is set but empty" in error_of(environ={"EXEC_RUNTIME_TOKEN": " "})
    secret.write_text("\n")
    assert error_of("--config", path) == f"token file {secret} is empty"


# --- errors name the source, the key and what was expected ---------------------------------


def test_an_unknown_key_lists_the_valid_ones(tmp_path: Path) -> None:
    path = config_file(tmp_path, "max_sesions = 10\n")
    message = error_of("--config", path)
    first, valid = message.splitlines()
    assert first == f"{path}: unknown key 'max_sesions' (did you mean 'max_sessions'?)"
    assert valid == f"{path}: valid keys: {', '.join(sorted(OPTIONS))}"
    # The embed-only fields are no keys: the token itself, the providers, test hooks.
    for embed_only in ("token", "tracer_provider", "start_delay", "_start_delay"):
        assert embed_only not in OPTIONS
        assert "unknown key" in error_of("--config", config_file(tmp_path, f"{embed_only} = 1"))


def test_the_start_delay_test_hook_is_not_public() -> None:
    with pytest.raises(TypeError):
        ServerConfig(start_delay=1.0)  # type: ignore[call-arg]
    assert ServerConfig(_start_delay=1.0)._start_delay == 1.0  # tests only
    assert "_start_delay" not in repr(ServerConfig(_start_delay=1.0))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('max_sessions = "10"', "max_sessions: expected an integer, got '10' (a string)"),
        ("max_sessions = 1.5", "max_sessions: expected an integer, got 1.5 (a number)"),
        ("max_sessions = true", "max_sessions: expected an integer, got True (a bool)"),
        ('closed_ttl = "30"', "closed_ttl: expected a number, got '30' (a string)"),
        ("metrics = 1", "metrics: expected true or false, got 1 (an integer)"),
        ("listen = 8765", "listen: expected a string, got 8765 (an integer)"),
        (
            'sandbox_mechanisms = "bwrap"',
            "sandbox_mechanisms: expected a list of strings, got 'bwrap' (a string)",
        ),
        ("closed_ttl = nan", "closed_ttl must be a number >= 0, got nan"),
        ("max_sessions = 0", "max_sessions must be a finite number > 0, got 0"),
        (
            'sandbox_mechanisms = ["seatbelt"]',
            "sandbox_mechanisms: unknown sandbox mechanism 'seatbelt': choose from bwrap, "
            "landlock",
        ),
        (
            'log_level = "loud"',
            "log_level: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL (any case), "
            "got 'loud'",
        ),
        ('log_format = "xml"', "log_format: expected one of text, json, got 'xml'"),
    ],
)
def test_a_bad_value_in_the_file_names_the_file_the_key_and_the_type(
    tmp_path: Path, line: str, expected: str
) -> None:
    path = config_file(tmp_path, line + "\n")
    assert error_of("--config", path) == f"{path}: {expected}"


def test_every_bad_value_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = config_file(tmp_path, 'max_sessions = "many"\nclosed_ttl = -1\nlisten = "stdio"\n')
    assert error_of("--config", path).splitlines() == [
        f"{path}: max_sessions: expected an integer, got 'many' (a string)",
        f"{path}: closed_ttl must be a number >= 0, got -1.0",
    ]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MAX_SESSIONS", "lots", "expected an integer, got 'lots'"),
        ("CLOSED_TTL", "soon", "expected a number, got 'soon'"),
        ("CLOSED_TTL", "nan", "closed_ttl must be a number >= 0, got nan"),
        (
            "METRICS",
            "maybe",
            "expected one of 1, true, yes, on, 0, false, no, off, got 'maybe'",
        ),
        ("DEFAULT_SANDBOX", "full", "default_sandbox must be one of read-only, "
         "workspace-write, got 'full'"),
    ],
)
def test_a_bad_variable_is_named(variable: str, value: str, expected: str) -> None:
    message = error_of(environ={f"EXEC_RUNTIME_{variable}": value})
    assert message == f"EXEC_RUNTIME_{variable}: {expected}"


def test_a_bad_flag_value_that_argparse_cannot_see_names_the_flag() -> None:
    assert error_of("--max-sessions", "0") == (
        "--max-sessions: max_sessions must be a finite number > 0, got 0"
    )


def test_a_file_that_is_missing_or_not_toml_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert error_of("--config", str(missing)) == (
        f"--config {missing}: No such file or directory"
    )
    path = config_file(tmp_path, "max_sessions = \n")
    assert error_of("--config", path).startswith(f"{path}: not valid TOML: ")


def test_a_rule_over_two_options_is_reported(tmp_path: Path) -> None:
    path = config_file(tmp_path, 'tls_key = "key.pem"\n')
    assert error_of("--config", path) == "tls_key needs tls_cert"


# --- the keys, the flags and the documentation agree -------------------------------------


def test_every_flag_is_a_key_and_every_key_a_flag() -> None:
    serve = next(
        parser
        for action in _build_parser()._subparsers._group_actions  # type: ignore[union-attr]
        for name, parser in action.choices.items()  # type: ignore[union-attr]
        if name == "serve"
    )
    dests = {action.dest for action in serve._actions} - {"help", "config"}
    assert dests == set(OPTIONS)


def test_the_example_file_names_every_key_with_its_default() -> None:
    text = EXAMPLE.read_text()
    for key in OPTIONS:
        assert re.search(rf"^(# )?{key} = ", text, re.MULTILINE), key
    got = options("--config", str(EXAMPLE))
    assert got.config == ServerConfig()
    assert (got.log_level, got.log_format) == ("INFO", "text")


def test_no_switch_of_the_test_suite_or_ci_is_a_serve_variable() -> None:
    """``EXEC_RUNTIME_<OPTION>`` configures every ``serve`` the tests start: a CI switch
    of that shape (``EXEC_RUNTIME_REQUIRE_SANDBOX`` was one) would change the daemons
    under test."""
    ours = set(consumed_variables()) - {"EXEC_RUNTIME_TOKEN"}
    # What CI and nox set, and what the tests read as switches from their environment.
    for path in [ROOT / ".ci" / "run", ROOT / "noxfile.py"]:
        named = set(re.findall(r"EXEC_RUNTIME_[A-Z_]+", path.read_text()))
        assert not named & ours, (path, named & ours)
    switch = re.compile(r"(?:environ\.get\(|environ\[|getenv\()\s*[\"'](EXEC_RUNTIME_[A-Z_]+)")
    for path in ROOT.glob("tests/**/*.py"):
        named = set(switch.findall(path.read_text()))
        assert not named & ours, (path, named & ours)
    assert switch.findall('os.environ.get("EXEC_RUNTIME_TEST_REQUIRE_SANDBOX")')


# --- a real serve ------------------------------------------------------------------------


async def test_serve_reads_its_file_and_environment_and_children_inherit_neither(
    daemons: Any, tmp_path: Path
) -> None:
    path = config_file(tmp_path, 'log_format = "json"\nlog_level = "WARNING"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXEC_RUNTIME_")}
    env["EXEC_RUNTIME_LOG_LEVEL"] = "info"  # over the file's WARNING
    with trio.fail_after(20):
        daemon: Daemon = await daemons("--config", path, env=env)
        async with exec_runtime.open_client(daemon.url) as client:
            done = await client.run(
                ["sh", "-c", 'echo "${EXEC_RUNTIME_LOG_LEVEL-unset}"'],
                env_policy={"inherit": "all", "ignoreDefaultExcludes": True},
            )
        assert done.stdout == b"unset\n"
        daemon.process.send_signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    lines = [json.loads(line) for line in daemon.stderr.decode().splitlines()]
    listening = [line for line in lines if line["message"].startswith("listening on")]
    assert listening and listening[0]["level"] == "INFO"


async def test_serve_with_a_bad_file_exits_2_naming_the_file_and_key(tmp_path: Path) -> None:
    path = config_file(tmp_path, "max_sesions = 10\nmax_sessions = 'ten'\n")
    with trio.fail_after(20):
        done = await trio.run_process(
            [sys.executable, "-m", "exec_runtime", "serve", "--config", path],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert (done.returncode, done.stdout) == (2, b"")
    err = done.stderr.decode()
    assert f"exec-runtime serve: {path}: unknown key 'max_sesions'" in err
    assert f"exec-runtime serve: {path}: valid keys: " in err
    assert "Traceback" not in err


def test_a_bad_variable_exits_2_from_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXEC_RUNTIME_PING_TIMEOUT", "0")
    assert cli_main(["serve"]) == 2
    assert capsys.readouterr().err == (
        "exec-runtime serve: EXEC_RUNTIME_PING_TIMEOUT: ping_timeout must be a finite "
        "number > 0, got 0.0\n"
    )
