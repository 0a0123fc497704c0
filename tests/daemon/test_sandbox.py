"""The sandbox, for real (PROTOCOL §11): bubblewrap and Landlock confine real commands.

Where a mechanism is missing these tests skip, unless ``EXEC_RUNTIME_TEST_REQUIRE_SANDBOX``
is set (CI sets it): then a missing mechanism fails the run, so CI can never pass
with the sandbox untested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import exec_runtime
from exec_runtime import ExecClient, ProtocolError, Sandbox, SandboxDeniedError, ServerConfig
from exec_runtime._daemon.sandbox import SandboxEnforcer, probe
from exec_runtime._daemon.sandbox._seccomp import program_fd
from exec_runtime._wire.sandbox_intent import sandbox_intent
from tests.support.daemon_process import eventually, proc_state
from tests.support.wire_client import output_of

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

REQUIRED = bool(os.environ.get("EXEC_RUNTIME_TEST_REQUIRE_SANDBOX"))
UNENFORCEABLE = "sandbox intent cannot be enforced on this executor"


def need(mechanism: str) -> None:
    available = probe(None)
    if mechanism in available.mechanisms((mechanism,)):
        return
    why = available.reasons.get(mechanism) or available.reasons.get("seccomp", "unavailable")
    message = f"sandbox mechanism {mechanism} is unavailable here: {why}"
    if REQUIRED:
        pytest.fail(message + " (EXEC_RUNTIME_TEST_REQUIRE_SANDBOX is set)")
    pytest.skip(message)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A workspace with a git directory, a .codex directory and a file."""
    root = tmp_path / "ws"
    (root / ".git" / "hooks").mkdir(parents=True)
    (root / ".codex").mkdir()
    (root / "src.txt").write_text("source\n")
    return root


@pytest.fixture(params=["bwrap", "landlock"])
def mechanism(request: pytest.FixtureRequest) -> str:
    need(request.param)
    return str(request.param)


def confined(sandbox: Sandbox, mechanism: str) -> Sandbox:
    return sandbox.with_legacy_landlock() if mechanism == "landlock" else sandbox


@pytest.fixture(params=["local", "remote"])
async def sandbox_client(
    request: pytest.FixtureRequest, nursery: trio.Nursery
) -> AsyncIterator[ExecClient]:
    from tests.support.wire_client import open_backend

    # A test that names a mechanism gets a daemon that may use only that one.
    config = ServerConfig()
    if "mechanism" in request.fixturenames:
        config = ServerConfig(sandbox_mechanisms=(request.getfixturevalue("mechanism"),))
    async with open_backend(request.param, nursery, config) as client:
        yield client


async def refused_by_landlock(client: ExecClient, sandbox: Sandbox, cwd: Path) -> None:
    """Landlock cannot keep an absent .codex/.agents (or a present .git) from being
    written inside a writable root: a plan with a writable root is refused."""
    with trio.fail_after(30), pytest.raises(ProtocolError) as caught:
        await client.run(["true"], sandbox=sandbox, cwd=cwd)
    assert caught.value.code == -32602
    assert caught.value.message.startswith(UNENFORCEABLE)
    assert "Landlock cannot" in caught.value.message


async def run(client: ExecClient, script: str, **kwargs: Any) -> Any:
    with trio.fail_after(30):
        return await client.run(["sh", "-c", script], check=False, **kwargs)


# --- read-only -----------------------------------------------------------------------


@pytest.mark.parametrize("tty", [False, True])
async def test_read_only_refuses_a_write_and_flags_it(
    sandbox_client: ExecClient, mechanism: str, workspace: Path, tty: bool
) -> None:
    target = workspace / "written.txt"
    sandbox = confined(Sandbox.read_only(), mechanism)
    proc = await sandbox_client.start(
        ["sh", "-c", f"cat {workspace}/src.txt; echo x > {target}"],
        sandbox=sandbox,
        cwd=workspace,
        tty=tty,
    )
    assert proc.sandbox_type == "linuxSeccomp"
    events = []
    with trio.fail_after(30):
        async for event in proc.events():
            events.append(event)
    exited = next(e for e in events if isinstance(e, exec_runtime.Exited))
    output = b"".join(e.data for e in events if isinstance(e, exec_runtime.Output))
    assert b"source" in output  # reading is allowed
    assert exited.exit_code != 0
    assert exited.sandbox_denied is True
    assert not target.exists()


async def test_read_only_run_check_raises_sandbox_denied(
    sandbox_client: ExecClient, workspace: Path
) -> None:
    need("bwrap")
    with trio.fail_after(30), pytest.raises(SandboxDeniedError) as caught:
        await sandbox_client.run(
            ["sh", "-c", f"echo x > {workspace}/f"], sandbox=Sandbox.read_only(), cwd=workspace
        )
    assert isinstance(caught.value, subprocess.CalledProcessError)
    assert caught.value.returncode != 0
    assert b"Read-only file system" in caught.value.stderr


@pytest.mark.parametrize(
    ("script", "code"),
    [("exit 3", 3), ("exec /nonexistent/command", 127), ("exit 0", 0), ("exit 2", 2)],
)
async def test_an_ordinary_failure_is_not_flagged(
    sandbox_client: ExecClient, mechanism: str, workspace: Path, script: str, code: int
) -> None:
    with trio.fail_after(30):
        proc = await sandbox_client.start(
            ["sh", "-c", script], sandbox=confined(Sandbox.read_only(), mechanism), cwd=workspace
        )
        events = [event async for event in proc.events()]
    exited = next(e for e in events if isinstance(e, exec_runtime.Exited))
    assert exited.exit_code == code
    assert exited.sandbox_denied is False


async def test_exit_flag_is_the_same_on_every_read(connect: Any, workspace: Path) -> None:
    need("bwrap")
    client = await connect()
    intent = Sandbox.read_only().to_dict()
    with trio.fail_after(30):
        started = await client.start(
            "p", ["sh", "-c", "echo denied > f"], cwd=workspace.as_uri(), sandbox=intent
        )
        assert started == {"processId": "p", "sandboxType": "linuxSeccomp"}
        events = await client.wait_closed("p")
        exited = [m for m in events if m["method"] == "process/exited"]
        assert exited[0]["params"]["sandboxDenied"] is True
        for _ in range(2):
            result = await client.read_all("p")
            assert result["sandboxDenied"] is True
            assert result["exitCode"] == exited[0]["params"]["exitCode"]


async def test_unsandboxed_start_reports_none(connect: Any, workspace: Path) -> None:
    client = await connect()
    with trio.fail_after(30):
        started = await client.start("p", ["sh", "-c", "exit 1"], cwd=workspace.as_uri())
        assert started["sandboxType"] == "none"
        events = await client.wait_closed("p")
    exited = [m for m in events if m["method"] == "process/exited"]
    assert exited[0]["params"]["sandboxDenied"] is False


# --- workspace-write --------------------------------------------------------------------


async def test_workspace_write_grants_the_workspace_only(
    sandbox_client: ExecClient, mechanism: str, workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    sandbox = Sandbox.workspace_write([workspace], writable_tmp=False)
    if mechanism == "landlock":
        await refused_by_landlock(sandbox_client, confined(sandbox, mechanism), workspace)
        return
    result = await run(
        sandbox_client,
        f"echo inside > {workspace}/new.txt && cat {workspace}/new.txt; "
        f"echo out > {outside}/x.txt; echo etc > /etc/exec-runtime-test",
        sandbox=confined(sandbox, mechanism),
        cwd=workspace,
    )
    assert result.stdout == b"inside\n"
    assert (workspace / "new.txt").read_text() == "inside\n"
    assert not (outside / "x.txt").exists()
    assert not await trio.Path("/etc/exec-runtime-test").exists()


@pytest.mark.parametrize("tty", [False, True])
async def test_protected_paths_stay_read_only(
    sandbox_client: ExecClient, workspace: Path, tty: bool
) -> None:
    need("bwrap")
    result = await run(
        sandbox_client,
        f"touch {workspace}/ok; touch {workspace}/.git/hooks/pre-commit; "
        f"touch {workspace}/.codex/config",
        sandbox=Sandbox.workspace_write([workspace]),
        cwd=workspace,
        tty=tty,
    )
    assert (workspace / "ok").exists()
    assert not (workspace / ".git" / "hooks" / "pre-commit").exists()
    assert not (workspace / ".codex" / "config").exists()
    assert result.returncode != 0


async def test_a_git_file_protects_the_directory_it_names(
    sandbox_client: ExecClient, tmp_path: Path
) -> None:
    need("bwrap")
    workspace = tmp_path / "worktree"
    gitdir = workspace / "gitdata"
    gitdir.mkdir(parents=True)
    (workspace / ".git").write_text("gitdir: gitdata\n")
    result = await run(
        sandbox_client,
        f"touch {gitdir}/HEAD; echo '' >> {workspace}/.git",
        sandbox=Sandbox.workspace_write([workspace], writable_tmp=False),
        cwd=workspace,
    )
    assert result.returncode != 0
    assert not (gitdir / "HEAD").exists()
    assert (workspace / ".git").read_text() == "gitdir: gitdata\n"


async def test_a_symlink_to_outside_does_not_open_the_outside(
    sandbox_client: ExecClient, mechanism: str, tmp_path: Path
) -> None:
    workspace = tmp_path / "plain"
    workspace.mkdir()
    outside = tmp_path / "secret-dir"
    outside.mkdir()
    (workspace / "link").symlink_to(outside)
    sandbox = confined(Sandbox.workspace_write([workspace], writable_tmp=False), mechanism)
    if mechanism == "landlock":
        await refused_by_landlock(sandbox_client, sandbox, workspace)
        return
    result = await run(
        sandbox_client, f"echo pwned > {workspace}/link/x", sandbox=sandbox, cwd=workspace
    )
    assert result.returncode != 0
    assert not (outside / "x").exists()


# --- network ---------------------------------------------------------------------------


CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5).close()\n"
    "except OSError as exc:\n"
    "    print('refused:', exc); sys.exit(1)\n"
    "print('connected')\n"
)


@pytest.mark.parametrize("network", [False, True])
async def test_network_restricted_blocks_loopback(
    sandbox_client: ExecClient, mechanism: str, workspace: Path, network: bool
) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        with trio.fail_after(30):
            result = await sandbox_client.run(
                [sys.executable, "-c", CONNECT, str(port)],
                sandbox=confined(Sandbox.read_only(network=network), mechanism),
                cwd=workspace,
                check=False,
            )
    finally:
        listener.close()
    if network:
        assert result.stdout == b"connected\n", result
        assert result.returncode == 0
    else:
        assert b"refused" in result.stdout
        assert result.returncode == 1


async def test_managed_network_proxy_ports_are_refused_not_approximated(
    connect: Any, workspace: Path
) -> None:
    client = await connect()
    marker = workspace / "ran"
    with trio.fail_after(30):
        reply = await client.start_request(
            "p",
            ["touch", str(marker)],
            cwd=workspace.as_uri(),
            sandbox=Sandbox.read_only(network=True).to_dict(),
            enforceManagedNetwork=True,
            managedNetwork={"loopbackPorts": [3128]},
        )
    assert reply["error"]["code"] == -32602
    assert UNENFORCEABLE in reply["error"]["message"]
    assert not marker.exists()


async def test_managed_network_with_local_binding_gets_a_private_network(
    connect: Any, workspace: Path
) -> None:
    need("bwrap")
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    script = (
        "import socket, sys\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
        "socket.create_connection(s.getsockname()).close()\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
        "except OSError: print('host unreachable')\n"
    )
    client = await connect()
    try:
        with trio.fail_after(30):
            await client.start(
                "p",
                [sys.executable, "-c", script],
                cwd=workspace.as_uri(),
                sandbox=Sandbox.read_only().to_dict(),
                enforceManagedNetwork=True,
                managedNetwork={"loopbackPorts": [], "allowLocalBinding": True},
            )
            events = await client.wait_closed("p")
    finally:
        listener.close()
    assert output_of(events) == b"host unreachable\n"


# --- fail closed ---------------------------------------------------------------------


async def start_error(
    nursery: trio.Nursery, config: ServerConfig, workspace: Path, **params: Any
) -> tuple[dict[str, Any], Path]:
    url = await nursery.start(exec_runtime.serve, config)
    import trio_websocket

    from tests.support.wire_client import RawClient

    marker = workspace / f"ran-{uuid.uuid4().hex}"
    async with trio.open_nursery() as inner:
        ws = await trio_websocket.connect_websocket_url(inner, url)
        client = RawClient(ws, inner)
        await client.handshake()
        params.setdefault("sandbox", Sandbox.read_only().to_dict())
        reply = await client.start_request(
            "p", ["touch", str(marker)], cwd=workspace.as_uri(), **params
        )
        await ws.aclose()
        inner.cancel_scope.cancel()
    return reply, marker


@pytest.mark.parametrize(
    ("config", "why"),
    [
        (ServerConfig(sandbox_mechanisms=()), "disabled"),
        (
            ServerConfig(sandbox_mechanisms=("bwrap",), bwrap_path="/nonexistent/bwrap"),
            "no sandbox mechanism",
        ),
    ],
)
async def test_no_mechanism_refuses_and_spawns_nothing(
    nursery: trio.Nursery, workspace: Path, config: ServerConfig, why: str
) -> None:
    with trio.fail_after(30):
        reply, marker = await start_error(nursery, config, workspace)
    assert reply["error"]["code"] == -32602
    assert reply["error"]["message"].startswith(UNENFORCEABLE)
    assert why in reply["error"]["message"]
    assert not marker.exists()


async def test_landlock_only_refuses_a_rule_it_cannot_express(
    nursery: trio.Nursery, workspace: Path
) -> None:
    need("landlock")
    with trio.fail_after(30):
        reply, marker = await start_error(
            nursery,
            ServerConfig(sandbox_mechanisms=("landlock",)),
            workspace,
            sandbox=Sandbox.workspace_write([workspace]).to_dict(),
        )
    assert reply["error"]["code"] == -32602
    assert UNENFORCEABLE in reply["error"]["message"]
    assert "Landlock cannot" in reply["error"]["message"]
    assert not marker.exists()


@pytest.mark.parametrize(
    ("sandbox", "field"),
    [
        ({"workspaceRoots": ["http://example/x"]}, "sandbox.workspaceRoots[0]"),
        ({"workspaceRoots": ["file:relative"]}, "sandbox.workspaceRoots[0]"),
        ({"cwd": "file:///tmp?query"}, "sandbox.cwd"),
        (
            {
                "permissions": {
                    "type": "managed",
                    "network": "restricted",
                    "file_system": {
                        "type": "restricted",
                        "entries": [
                            {
                                "path": {
                                    "type": "special",
                                    "value": {"kind": "project_roots", "subpath": "../up"},
                                },
                                "access": "write",
                            }
                        ],
                    },
                }
            },
            "subpath",
        ),
        ({"permissions": {"type": "mangled"}}, "$.sandbox.permissions.type"),
        # Required, as Codex requires them (a host must not rely on a default).
        (
            {"permissions": {"type": "managed", "file_system": {"type": "unrestricted"}}},
            "network",
        ),
        ({"permissions": {"type": "external"}}, "network"),
        ({"windowsSandboxLevel": None}, "windowsSandboxLevel"),
        (
            {
                "permissions": {
                    "type": "managed",
                    "network": "restricted",
                    "file_system": {
                        "type": "restricted",
                        "entries": [
                            {
                                "path": {"type": "special", "value": {"kind": "bogus"}},
                                "access": "read",
                            }
                        ],
                    },
                }
            },
            "kind",
        ),
    ],
)
async def test_a_malformed_intent_is_invalid_params_naming_the_field(
    nursery: trio.Nursery, workspace: Path, sandbox: dict[str, Any], field: str
) -> None:
    intent = {**Sandbox.read_only().to_dict(), **sandbox}
    intent = {key: value for key, value in intent.items() if value is not None}
    with trio.fail_after(30):
        reply, marker = await start_error(nursery, ServerConfig(), workspace, sandbox=intent)
    assert reply["error"]["code"] == -32602
    assert field in reply["error"]["message"]
    assert not marker.exists()


async def test_disabled_profile_runs_unsandboxed(connect: Any, workspace: Path) -> None:
    client = await connect()
    intent = {"permissions": {"type": "disabled"}, "windowsSandboxLevel": "disabled"}
    with trio.fail_after(30):
        started = await client.start(
            "p", ["sh", "-c", "echo ok > out"], cwd=workspace.as_uri(), sandbox=intent
        )
        await client.wait_closed("p")
    assert started["sandboxType"] == "none"
    assert (workspace / "out").exists()


# --- operator policy -------------------------------------------------------------------


async def test_require_sandbox_refuses_unconfined_starts(
    nursery: trio.Nursery, workspace: Path
) -> None:
    need("bwrap")
    config = ServerConfig(require_sandbox=True)
    with trio.fail_after(30):
        reply, marker = await start_error(nursery, config, workspace, sandbox=None)
    assert reply["error"]["code"] == -32602
    assert "--require-sandbox" in reply["error"]["message"]
    assert not marker.exists()
    async with exec_runtime.open_local(config) as client:
        result = await run(client, "echo hi", sandbox=Sandbox.read_only(), cwd=workspace)
    assert result.stdout == b"hi\n"


async def test_default_sandbox_confines_starts_without_an_intent(workspace: Path) -> None:
    need("bwrap")
    async with exec_runtime.open_local(ServerConfig(default_sandbox="read-only")) as client:
        with trio.fail_after(30):
            proc = await client.start(["sh", "-c", "echo x > f"], cwd=workspace)
            assert proc.sandbox_type == "linuxSeccomp"
            assert await proc.wait() != 0
    assert not (workspace / "f").exists()


def test_serve_refuses_to_start_when_its_policy_needs_a_missing_mechanism() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "exec_runtime",
            "serve",
            "--require-sandbox",
            *("--sandbox-mechanisms", "none"),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert b"--require-sandbox" in result.stderr
    assert result.stdout == b""  # no URL: it never listened


# --- process control inside the sandbox -------------------------------------------------


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry))
    return found


@pytest.mark.parametrize("tty", [False, True])
async def test_terminate_leaves_nothing_of_a_sandboxed_tree(
    sandbox_client: ExecClient, mechanism: str, workspace: Path, tty: bool
) -> None:
    marker = f"{uuid.uuid4().int % 10_000}.{uuid.uuid4().int % 1000}17"
    # Only a PID namespace (bwrap) also catches a process that left the group with
    # setsid; under Landlock, as without a sandbox, the group kill cannot reach it.
    escapee = "setsid" if mechanism == "bwrap" else ""
    script = f"sleep {marker} & sleep {marker} & {escapee} sleep {marker} & echo ready; wait"
    with trio.fail_after(30):
        proc = await sandbox_client.start(
            ["sh", "-c", script],
            sandbox=confined(Sandbox.read_only(), mechanism),
            cwd=workspace,
            tty=tty,
        )
        await eventually(lambda: len(processes_with(f"sleep\0{marker}")) == 3)
        await proc.kill()
        assert await proc.wait() == 128 + 9
        # Nothing of the tree is left (the setsid one included), nor bwrap itself.
        await eventually(lambda: not processes_with(f"sleep\0{marker}"))
        await eventually(lambda: not processes_with(marker))
    assert all(proc_state(pid) != "Z" for pid in children_of_us())


def children_of_us() -> list[int]:
    me = os.getpid()
    return [int(pid) for pid in Path(f"/proc/{me}/task/{me}/children").read_text().split()]


async def test_signal_and_resize_reach_a_sandboxed_command(
    sandbox_client: ExecClient, workspace: Path
) -> None:
    need("bwrap")
    script = "trap 'echo resized; stty size' WINCH; echo ready; while :; do sleep 0.05; done"
    with trio.fail_after(30):
        proc = await sandbox_client.start(
            ["sh", "-c", script], sandbox=Sandbox.read_only(), cwd=workspace, tty=True
        )
        seen = b""
        resized = False
        async for event in proc.events():
            if isinstance(event, exec_runtime.Output):
                seen += event.data
                if b"ready" in seen and not resized:
                    await proc.resize(40, 120)
                    resized = True
                if b"40 120" in seen:
                    break
        await proc.signal("interrupt")
        assert await proc.wait() == 128 + 2


# --- fs under a sandbox ---------------------------------------------------------------


async def test_fs_calls_obey_the_sandbox(sandbox_client: ExecClient, workspace: Path) -> None:
    fs = sandbox_client.fs
    read_only = Sandbox.read_only()
    writable = Sandbox.workspace_write([workspace], writable_tmp=False)
    with trio.fail_after(30):
        assert await fs.read_file(workspace / "src.txt", sandbox=read_only) == b"source\n"
        with pytest.raises(ProtocolError) as caught:
            await fs.write_file(workspace / "new.txt", b"x", sandbox=read_only)
        assert caught.value.code == -32600
        assert "not writable" in caught.value.message
        await fs.write_file(workspace / "new.txt", b"x", sandbox=writable)
        assert (workspace / "new.txt").read_bytes() == b"x"
        for call in (
            fs.write_file(workspace / ".git" / "config", b"evil", sandbox=writable),
            fs.create_directory(workspace / ".git" / "hooks" / "d", sandbox=writable),
            fs.remove(workspace, recursive=True, sandbox=writable),  # would delete .git with it
            fs.remove(workspace / ".codex", recursive=True, sandbox=writable),
            fs.copy(workspace / "src.txt", workspace / ".git" / "x", sandbox=writable),
            fs.write_file("/etc/exec-runtime-test", b"x", sandbox=writable),
        ):
            with pytest.raises(ProtocolError) as caught:
                await call
            assert caught.value.code == -32600
        assert (workspace / ".codex").is_dir()
        assert not (workspace / ".git" / "config").exists()
        await fs.remove(workspace / "new.txt", sandbox=writable)
        assert not (workspace / "new.txt").exists()


async def test_fs_open_under_a_sandbox_is_refused(connect: Any, workspace: Path) -> None:
    client = await connect()
    with trio.fail_after(30):
        reply = await client.request(
            "fs/open",
            {
                "handleId": "h",
                "path": (workspace / "src.txt").as_uri(),
                "sandbox": Sandbox.read_only().to_dict(),
            },
        )
    assert reply["error"]["code"] == -32600


async def test_fs_masks_a_denied_path(connect: Any, workspace: Path) -> None:
    secret = workspace / "secret"
    secret.mkdir()
    (secret / "key").write_text("k")
    intent = Sandbox.read_only().to_dict()
    intent["permissions"]["file_system"]["entries"].append(entry(secret, "deny"))
    client = await connect()
    with trio.fail_after(30):
        reply = await client.request(
            "fs/readFile", {"path": (secret / "key").as_uri(), "sandbox": intent}
        )
        assert reply["error"]["code"] == -32600
        walk = await client.call(
            "fs/walk",
            {
                "path": workspace.as_uri(),
                "options": {"maxDepth": 4, "maxDirectories": 100, "maxEntries": 100},
                "sandbox": intent,
            },
        )
    paths = [entry["path"] for entry in walk["entries"]]
    assert any(p.endswith("secret") for p in paths)
    assert not any(p.endswith("key") for p in paths)


async def test_a_denied_path_is_masked_for_a_command(
    sandbox_client: ExecClient, workspace: Path
) -> None:
    need("bwrap")
    secret = workspace / "secret"
    secret.mkdir()
    (secret / "key").write_text("k")
    (workspace / "token").write_text("t")
    intent = Sandbox.read_only().to_dict()
    for path in (secret, workspace / "token"):
        intent["permissions"]["file_system"]["entries"].append(entry(path, "deny"))
    result = await run(
        sandbox_client,
        f"ls -A {secret}; cat {workspace}/token; cat {workspace}/src.txt",
        sandbox=intent,
        cwd=workspace,
    )
    assert result.stdout == b"source\n"


# --- capabilities and the client's API -------------------------------------------------


async def test_environment_info_tells_the_truth(sandbox_client: ExecClient) -> None:
    with trio.fail_after(30):
        info = await sandbox_client.environment_info()
    mechanisms = probe(None).mechanisms(("bwrap", "landlock"))
    assert info.capabilities["sandbox"] == mechanisms
    assert info.capabilities["capabilityDiscoverySandbox"] is bool(mechanisms)
    assert info.capabilities["networkProxyLaunch"] is False
    async with exec_runtime.open_local(ServerConfig(sandbox_mechanisms=())) as client:
        with trio.fail_after(30):
            info = await client.environment_info()
    assert info.capabilities["capabilityDiscoverySandbox"] is False
    assert info.capabilities["sandbox"] == []


def test_the_builder_and_the_raw_dict_mean_the_same() -> None:
    built = Sandbox.workspace_write(["/w"], network=True)
    raw = built.to_dict()
    assert raw["permissions"]["type"] == "managed"
    assert raw["permissions"]["network"] == "enabled"
    assert raw["workspaceRoots"] == ["file:///w"]
    assert sandbox_intent(raw) == built.intent
    with pytest.raises(ValueError, match="permissions"):
        Sandbox.from_dict({"windowsSandboxLevel": "disabled"})
    with pytest.raises(TypeError):
        sandbox_intent("read-only")  # type: ignore[arg-type]


def test_cli_run_sandbox(workspace: Path) -> None:
    need("bwrap")
    base = [sys.executable, "-m", "exec_runtime", "run", "--cwd", str(workspace)]
    ok = subprocess.run(
        [*base, "--sandbox", "workspace-write", "--", "sh", "-c", "echo hi > f; cat f"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (ok.returncode, ok.stdout) == (0, b"hi\n"), ok.stderr
    denied = subprocess.run(
        [*base, "--sandbox", "read-only", "--", "sh", "-c", "echo hi > g"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert denied.returncode != 0
    assert b"sandboxDenied" in denied.stderr
    assert not (workspace / "g").exists()
    usage = subprocess.run(
        [*base, "--writable", "/tmp", "--", "true"], capture_output=True, timeout=60, check=False
    )
    assert usage.returncode == 2


# --- an unprivileged daemon ------------------------------------------------------------


DROP_TO_NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


def test_bwrap_plan_confines_for_an_unprivileged_user() -> None:
    """What a daemon run by an ordinary user hands bwrap (a user namespace instead of
    root's privileges), run as ``nobody``: the same plan, the same confinement."""
    need("bwrap")
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: every other test here runs that way")
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to drop privileges")
    available = probe(None)
    assert available.bwrap is not None and available.seccomp is not None
    bwrap = attrs.evolve(available.bwrap, unprivileged=True)
    root = Path(tempfile.mkdtemp(prefix="exec-runtime-nobody-"))
    try:
        workspace = root / "ws"
        (workspace / ".git").mkdir(parents=True)
        for path in (root, workspace):
            path.chmod(0o777)
        plan = SandboxEnforcer(("bwrap",)).plan_for(
            Sandbox.workspace_write([workspace], writable_tmp=False).intent,
            request_cwd=str(workspace),
            env={},
        )
        assert plan is not None
        fd = program_fd(available.seccomp.no_network)
        try:
            args = bwrap.arguments(plan, fd, "sh", str(workspace))
            script = "id -u; echo ok > in; echo no > .git/x; echo no > /etc/exec-runtime-x"
            result = subprocess.run(
                [*DROP_TO_NOBODY, *args, "/bin/sh", "-c", script],
                pass_fds=(fd,),
                capture_output=True,
                timeout=60,
                check=False,
            )
        finally:
            os.close(fd)
        assert result.stdout == b"65534\n", result.stderr
        assert (workspace / "in").read_text() == "ok\n"
        assert not (workspace / ".git" / "x").exists()
        assert b"Read-only file system" in result.stderr
        assert result.returncode != 0
    finally:
        shutil.rmtree(root)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
async def test_a_dying_daemon_takes_its_sandboxed_trees_along(
    daemons: Any, connect: Any, workspace: Path, how: str
) -> None:
    """SIGKILL: the orphan watchdog kills bwrap's group, and the PID namespace takes the
    rest (a setsid'd process too); SIGTERM: the graceful shutdown does."""
    need("bwrap")
    marker = f"{uuid.uuid4().int % 10_000}.{uuid.uuid4().int % 1000}19"
    script = f"sleep {marker} & setsid sleep {marker} & wait"
    with trio.fail_after(30):
        daemon = await daemons()
        client = await connect(url=daemon.url)
        for tty in (False, True):
            await client.start(
                f"p{tty}",
                ["sh", "-c", script],
                cwd=workspace.as_uri(),
                tty=tty,
                sandbox=Sandbox.read_only().to_dict(),
            )
        await eventually(lambda: len(processes_with(f"sleep\0{marker}")) == 4)
        if how == "SIGKILL":
            daemon.process.kill()
            await daemon.process.wait()
        else:
            daemon.process.terminate()
            assert await daemon.wait() == 0
        await eventually(lambda: not processes_with(marker))


async def test_sandbox_denied_survives_a_recovery(workspace: Path) -> None:
    """The exit is missed while the link is down: the client learns it from the read it
    makes after resuming, and the flag is the one the daemon decided at the exit."""
    need("bwrap")
    from exec_runtime.testing import FaultPlan, open_faulty_local

    plan = FaultPlan(drop_at_method="process/exited")
    async with open_faulty_local(plan) as (client, _faults):
        with trio.fail_after(30):
            proc = await client.start(
                ["sh", "-c", f"echo x > {workspace}/f"], sandbox=Sandbox.read_only(), cwd=workspace
            )
            events = [event async for event in proc.events()]
    exited = [e for e in events if isinstance(e, exec_runtime.Exited)]
    assert len(exited) == 1
    assert exited[0].sandbox_denied is True
    assert client.statistics().recoveries >= 1


def entry(path: Path | str, access: str) -> dict[str, Any]:
    uri = path.as_uri() if isinstance(path, Path) else path
    return {"path": {"type": "path", "path": uri}, "access": access}


async def test_a_writable_root_inside_a_denied_directory(
    sandbox_client: ExecClient, tmp_path: Path
) -> None:
    """The deeper grant wins, and bwrap can still make its mount point inside the mask
    (the mask turns read-only only once everything is mounted)."""
    need("bwrap")
    home = tmp_path / "home"
    (home / "u" / "ws").mkdir(parents=True)
    (home / "u" / "secret").mkdir()
    (home / "u" / "secret" / "key").write_text("k")
    intent = Sandbox.read_only().to_dict()
    intent["permissions"]["file_system"]["entries"] += [
        entry(home, "deny"),
        entry(home / "u" / "ws", "write"),
    ]
    result = await run(
        sandbox_client,
        f"echo hi > {home}/u/ws/f && cat {home}/u/ws/f; cat {home}/u/secret/key; touch {home}/new",
        sandbox=intent,
        cwd=home / "u" / "ws",
    )
    assert result.stdout == b"hi\n"
    assert b"No such file" in result.stderr
    assert b"Read-only file system" in result.stderr
    assert not (home / "new").exists()


async def test_a_restricted_profile_without_root_sees_only_its_grants(
    sandbox_client: ExecClient, tmp_path: Path
) -> None:
    need("bwrap")
    workspace = tmp_path / "w"
    workspace.mkdir()
    (tmp_path / "elsewhere").write_text("hidden")
    intent = {
        "permissions": {
            "type": "managed",
            "network": "restricted",
            "file_system": {
                "type": "restricted",
                "entries": [
                    {"path": {"type": "special", "value": {"kind": "minimal"}}, "access": "read"},
                    {
                        "path": {"type": "special", "value": {"kind": "project_roots"}},
                        "access": "write",
                    },
                ],
            },
        },
        "windowsSandboxLevel": "disabled",
    }
    result = await run(
        sandbox_client,
        f"echo x > /newfile; cat {tmp_path}/elsewhere; echo ok > out && cat out",
        sandbox=intent,
        cwd=workspace,
    )
    assert result.stdout == b"ok\n"
    assert b"/newfile: Read-only file system" in result.stderr  # the root is no scratch space
    assert b"elsewhere: No such file" in result.stderr


async def test_glob_entries_are_expanded_and_bounded(
    sandbox_client: ExecClient, workspace: Path, tmp_path: Path
) -> None:
    need("bwrap")
    for name in ("a.env", "b.env"):
        (workspace / name).write_text("SECRET=1")
    intent = Sandbox.workspace_write([workspace], writable_tmp=False).to_dict()
    intent["permissions"]["file_system"]["entries"].append(
        {"path": {"type": "glob_pattern", "pattern": f"{workspace}/*.env"}, "access": "deny"}
    )
    result = await run(
        sandbox_client, "cat a.env b.env; cat src.txt", sandbox=intent, cwd=workspace
    )
    assert result.stdout == b"source\n"
    many = tmp_path / "many"
    many.mkdir()
    for i in range(4097):
        (many / str(i)).touch()
    intent["permissions"]["file_system"]["entries"].append(
        {"path": {"type": "glob_pattern", "pattern": f"{many}/*"}, "access": "deny"}
    )
    with trio.fail_after(30), pytest.raises(ProtocolError) as caught:
        await sandbox_client.run(["true"], sandbox=intent, cwd=workspace)
    assert caught.value.code == -32602
    assert "matches more than 4096 paths" in caught.value.message


async def test_fs_writes_through_a_symlink_are_checked_where_they_land(
    sandbox_client: ExecClient, tmp_path: Path
) -> None:
    workspace = tmp_path / "w"
    workspace.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "existing").write_text("keep")
    (workspace / "to-existing").symlink_to(outside / "existing")
    (workspace / "to-new").symlink_to(outside / "new")  # dangling
    (workspace / "to-dir").symlink_to(outside)
    writable = Sandbox.workspace_write([workspace], writable_tmp=False)
    fs = sandbox_client.fs
    (workspace / "src").write_text("data")
    with trio.fail_after(30):
        for call in (
            fs.write_file(workspace / "to-existing", b"pwned", sandbox=writable),
            fs.write_file(workspace / "to-new", b"pwned", sandbox=writable),
            fs.write_file(workspace / "to-dir" / "x", b"pwned", sandbox=writable),
            fs.copy(workspace / "src", workspace / "to-new", sandbox=writable),
            fs.create_directory(workspace / "to-dir" / "d", sandbox=writable),
        ):
            with pytest.raises(ProtocolError) as caught:
                await call
            assert caught.value.code == -32600
        # Removing the link removes the link, which lives in the workspace.
        await fs.remove(workspace / "to-existing", sandbox=writable)
    assert (outside / "existing").read_text() == "keep"
    assert sorted(p.name for p in outside.iterdir()) == ["existing"]
    assert not (workspace / "to-existing").is_symlink()


async def test_a_sandboxed_child_sees_its_argv0_as_given(
    sandbox_client: ExecClient, mechanism: str, workspace: Path
) -> None:
    result = await run(
        sandbox_client, "echo $0", sandbox=confined(Sandbox.read_only(), mechanism), cwd=workspace
    )
    assert result.stdout == b"sh\n"


@pytest.mark.parametrize("kind", ["missing", "not-executable", "directory"])
async def test_a_program_that_cannot_run_fails_the_start_as_unsandboxed(
    sandbox_client: ExecClient, mechanism: str, workspace: Path, kind: str
) -> None:
    program = {
        "missing": "/nonexistent/command",
        "not-executable": str(workspace / "src.txt"),
        "directory": "/usr",
    }[kind]
    sandbox = confined(Sandbox.read_only(), mechanism)
    outcomes = []
    for confinement in (None, sandbox):
        with trio.fail_after(30), pytest.raises(OSError) as caught:
            await sandbox_client.run([program], sandbox=confinement, cwd=workspace)
        assert isinstance(caught.value, ProtocolError)
        outcomes.append((type(caught.value), caught.value.errno, caught.value.code))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("tty", [False, True])
async def test_an_absent_codex_or_agents_cannot_be_created(
    sandbox_client: ExecClient, tmp_path: Path, tty: bool
) -> None:
    """What a later unsandboxed agent run would trust; and the mount points bwrap
    needed are gone from the host afterwards."""
    need("bwrap")
    workspace = tmp_path / "fresh"
    workspace.mkdir()
    result = await run(
        sandbox_client,
        "mkdir .codex; mkdir -p .agents/x; echo x > .codex/config.toml; touch ok",
        sandbox=Sandbox.workspace_write([workspace], writable_tmp=False),
        cwd=workspace,
        tty=tty,
    )
    assert b"File exists" in result.stdout + result.stderr
    # The mount points are gone before the exit is reported.
    assert sorted(p.name for p in workspace.iterdir()) == ["ok"]


@pytest.mark.parametrize("target_exists", [True, False])
async def test_a_codex_link_in_a_writable_root_is_refused_not_run(
    sandbox_client: ExecClient, tmp_path: Path, target_exists: bool
) -> None:
    """``.codex`` in the workspace is a link: a read-only mount would land on its
    target, and the command could replace the link with its own ``.codex`` (it did,
    before: ``rm .codex && mkdir .codex`` succeeded; and with a missing target, bwrap
    refused every start). The intent cannot be enforced: refused, nothing runs."""
    need("bwrap")
    workspace, elsewhere = tmp_path / "ws", tmp_path / "elsewhere"
    workspace.mkdir()
    elsewhere.mkdir()
    if target_exists:
        (elsewhere / "codex-config").mkdir()
    (workspace / ".codex").symlink_to(elsewhere / "codex-config")
    with trio.fail_after(30), pytest.raises(ProtocolError) as refused:
        await sandbox_client.run(
            ["sh", "-c", "rm .codex && mkdir .codex && touch .codex/config.toml ran"],
            sandbox=Sandbox.workspace_write([workspace], writable=[elsewhere]),
            cwd=workspace,
        )
    assert refused.value.code == -32602
    assert f"{workspace}/.codex is a symlink in a writable root" in str(refused.value)
    assert (workspace / ".codex").is_symlink()
    assert not (workspace / "ran").exists()


async def test_guards_stay_while_another_sandbox_still_uses_them(
    sandbox_client: ExecClient, tmp_path: Path
) -> None:
    """Removing a guard's mount point lifts it in every sandbox that still has it: the
    first process to end must leave it to the last."""
    need("bwrap")
    workspace = tmp_path / "shared"
    workspace.mkdir()
    sandbox = Sandbox.workspace_write([workspace], writable_tmp=False)
    with trio.fail_after(30):
        long = await sandbox_client.start(
            ["sh", "-c", "read line; mkdir .codex && echo created"],
            sandbox=sandbox,
            cwd=workspace,
            pipe_stdin=True,
        )
        await run(sandbox_client, "true", sandbox=sandbox, cwd=workspace)
        await long.write(b"go\n")
        events = [event async for event in long.events()]
    output = b"".join(e.data for e in events if isinstance(e, exec_runtime.Output))
    assert b"created" not in output
    assert b"File exists" in output
    assert list(workspace.iterdir()) == []
