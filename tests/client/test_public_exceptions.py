"""The exception boundary, as a property: whatever a host passes to the public API
(wrong types, bad values, bad paths, unknown or duplicate ids, bad signals, a closed
client, bad ``open_client``/``open_local`` arguments), what comes out is a
``TypeError``, a ``ValueError`` or a class of the documented tree (``ExecRuntimeError``
and its subclasses, the OSError-compatible ones included): never msgspec, trio,
trio-websocket, wsproto, ``KeyError``, ``AttributeError``, an ``ExceptionGroup``, and
never a hang. On both backends.

Each example is one call (or a short sequence on one process) against a fresh client:
``open_local()``, or an in-process daemon on a loopback port and ``open_client``. Paths
that the fs calls may change are confined to the example's own directory, and the
commands run are a fixed harmless set. Findings are kept below as explicit examples.
"""

from __future__ import annotations

import math
import os
import signal
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exec_runtime
from exec_runtime import (
    EnvPolicy,
    ExecClient,
    ExecRuntimeError,
    ProcessHandle,
    Sandbox,
    ServerConfig,
)
from tests.support.wire_client import BACKENDS

CAP = 10.0
"""Seconds one example may take; running out is a hang, and fails the example."""
ALLOWED = (TypeError, ValueError, ExecRuntimeError)
DOCUMENTED = frozenset(
    obj
    for name in exec_runtime.__all__
    if isinstance(obj := getattr(exec_runtime, name), type) and issubclass(obj, ExecRuntimeError)
)

# ---------------------------------------------------------------------------
# Values


@attrs.frozen
class Under:
    """A path below the example's directory (made absolute when the call is made)."""

    name: str
    uri: bool = False


@attrs.frozen
class Root:
    """The example's own directory (made when the call is made)."""


# Text that is never an absolute path nor a URI: a relative path at worst.
text = st.text(max_size=8).filter(lambda s: not s.startswith("/") and ":" not in s)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
    st.binary(max_size=8),
    st.sampled_from(
        [
            bytearray(b"x"),
            memoryview(b"x"),
            Path("relative"),
            signal.SIGTERM,
            signal.SIGSTOP,
            object(),
            (),
            math.nan,
        ]
    ),
)
garbage = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.tuples(scalars, scalars),
    st.dictionaries(st.one_of(text, st.integers(), st.none()), scalars, max_size=3),
)
def mostly(valid: st.SearchStrategy[Any], bad: st.SearchStrategy[Any] = garbage) -> Any:
    """``valid`` three times in four, else ``bad``: deep enough to reach the daemon."""
    return st.integers(0, 3).flatmap(lambda i: bad if i == 0 else valid)


names = st.text(
    alphabet=st.sampled_from("abdefgxyz.\0\udcff é-"), min_size=1, max_size=6
).filter(lambda s: s not in (".", ".."))
fs_paths = mostly(
    st.one_of(
        st.sampled_from(["f", "d", "d/x", "e", "l", "fifo", "missing", "f/x"]).map(Under),
        st.sampled_from(["f", "d", "missing"]).map(lambda n: Under(n, uri=True)),
        names.map(Under),
        st.just(Root()),
        st.sampled_from(
            [
                "relative/path",
                "file:relative",
                "file://elsewhere/x",
                "http://example.com/x",
                "/nonexistent-exec-runtime/x",
                "",
            ]
        ),
    )
)
argvs = mostly(
    st.sampled_from(
        [
            ["true"],
            ["false"],
            ["sh", "-c", "echo out; echo err >&2; exit 3"],
            ["sh", "-c", "kill -TERM $$"],
            ["/nonexistent-exec-runtime-cmd"],
            ["/etc"],
            ["/etc/hostname"],
            [],
            [""],
            ["tr\0ue"],
            ["true", None],
            ["true\udcff"],
            ["echo", "\udcff"],
            "true",
            b"true",
            ("true",),
            [Path("true")],
        ]
    )
)
cwds = mostly(
    st.one_of(
        st.sampled_from(
            ["/", "/nonexistent-exec-runtime", "/etc/hostname", "relative", "file:///",
             "file:rel", "http://x/", "/tmp\0x", "/tmp/\udcff"]
        ),
        st.just(Root()),
        st.sampled_from(["f", "d", "missing"]).map(Under),
    )
)
envs = mostly(st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3))
env_policies = mostly(
    st.one_of(
        st.sampled_from(
            [
                "all",
                {"inherit": "none"},
                {"inheritt": "none"},
                {"include_only": ["HOME"]},
                {"includeOnly": ["PATH"], "ignore_default_excludes": True},
                {"inherit": "core", "set": {"A": "1"}},
                {"exclude": "PATH"},
                {"set": {"A=B": "1"}},
                EnvPolicy(inherit="none"),
            ]
        ),
        st.builds(lambda v: {"inherit": v}, garbage),
        st.builds(lambda v: {"set": v}, garbage),
        st.builds(lambda v: {"includeOnly": v}, garbage),
    )
)
sandboxes = mostly(
    st.one_of(
        st.sampled_from(
            [
                {"permissions": {}},
                {"mode": "read-only"},
                {"permissions": {"fileSystem": "nope"}},
                {"permissions": {"fileSystem": {"writableRoots": ["relative"]}}},
                Sandbox.read_only(),
            ]
        ),
        st.builds(lambda v: {"permissions": v}, garbage),
        st.builds(lambda v: {"permissions": {"network": v}}, garbage),
    )
)
timeouts = mostly(
    st.one_of(
        st.none(), st.floats(allow_nan=True), st.sampled_from([0, -1, 1e-300, 1e300, 10**400])
    )
)
tty_sizes = mostly(st.tuples(st.integers(-2, 70_000), st.integers(-2, 70_000)))
signals = mostly(
    st.sampled_from(
        [
            signal.SIGTERM,
            signal.SIGSTOP,
            signal.SIGUSR1,
            15,
            0,
            -1,
            999,
            2**70,
            "SIGINT",
            "TERM",
            "terminate",
            "hangup",
            "nope",
            "",
            "sigterm",
            "SIG\0TERM",
        ]
    )
)
bools = mostly(st.booleans())
datas = mostly(st.binary(max_size=8))
PROCESS_KWARGS: dict[str, st.SearchStrategy[Any]] = {
    "cwd": cwds,
    "env": envs,
    "env_policy": env_policies,
    "tty": bools,
    "pipe_stdin": bools,
    "tty_size": tty_sizes,
    "arg0": mostly(st.one_of(text, st.just("a\0b"))),
    "sandbox": sandboxes,
}
RUN_KWARGS = {**PROCESS_KWARGS, "input": datas, "check": bools, "timeout": timeouts}
START_KWARGS = {
    **PROCESS_KWARGS,
    "process_id": mostly(st.one_of(text, st.just("x" * 200), st.just("a\0b"))),
}


def kwargs_of(table: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=table)


# ---------------------------------------------------------------------------
# Calls


@attrs.define
class Context:
    client: ExecClient
    root: Path
    url: str | None
    nursery: trio.Nursery
    kind: str

    def resolve(self, value: Any) -> Any:
        if isinstance(value, Root):
            return str(self.root)
        if isinstance(value, Under):
            path = os.path.join(self.root, value.name)
            return "file://" + quote(os.fsencode(path)) if value.uri else path
        return value

    def resolve_all(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {key: self.resolve(value) for key, value in kwargs.items()}


def make_tree(root: Path) -> None:
    """root/{f, d/x, e/, l -> f, fifo}: what the named paths find."""
    root.mkdir()
    (root / "f").write_bytes(b"file")
    (root / "d").mkdir()
    (root / "d" / "x").write_bytes(b"x")
    (root / "e").mkdir()
    (root / "l").symlink_to("f")
    os.mkfifo(root / "fifo")


@attrs.define
class Op:
    """One call of the public API (its repr is what a failing example prints)."""

    what: str
    """run, start, start-twice, process, fs.<method>, closed, open_client, open_local"""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = attrs.field(factory=dict)


async def perform(op: Op, ctx: Context) -> None:
    args = [ctx.resolve(a) for a in op.args]
    kwargs = ctx.resolve_all(op.kwargs)
    client = ctx.client
    if op.what == "run":
        await client.run(*args, **kwargs)
    elif op.what in ("start", "start-twice"):
        handles = []
        try:
            for _ in range(2 if op.what == "start-twice" else 1):
                handles.append(await client.start(*args, **kwargs))
        finally:
            for handle in handles:
                await handle.kill()
    elif op.what == "process":
        await perform_on_process(client, *args)
    elif op.what == "fs.open_read":
        async with client.fs.open_read(*args, **kwargs) as blocks:
            async for _ in blocks:
                pass
    elif op.what.startswith("fs."):
        await getattr(client.fs, op.what[3:])(*args, **kwargs)
    elif op.what == "closed":
        await perform_when_closed(ctx, *args)
    elif op.what == "forgotten":
        await perform_on_forgotten(ctx, *args)
    elif op.what == "open_client":
        [url] = args
        if isinstance(url, str):
            url = url.replace("wss://DAEMON", (ctx.url or "").replace("ws://", "wss://"))
            url = url.replace("DAEMON", ctx.url or "")
        async with exec_runtime.open_client(url, **kwargs) as other:
            await other.environment_info()
    elif op.what == "open_local":
        async with exec_runtime.open_local(**kwargs) as other:
            await other.run(["true"])
    else:
        raise AssertionError(op)


async def perform_on_process(
    client: ExecClient, pipe_stdin: bool, actions: list[tuple[str, Any, Any]]
) -> None:
    handle = await client.start(["cat"], pipe_stdin=pipe_stdin)
    try:
        await perform_actions(handle, actions)
    finally:
        await handle.kill()
        await handle.wait()


async def perform_actions(handle: ProcessHandle, actions: list[tuple[str, Any, Any]]) -> None:
    for name, a, b in actions:
        method = getattr(handle, name)
        if name == "resize":
            await method(a, b)
        elif name in ("close_stdin", "terminate", "kill"):
            await method()
        else:
            await method(a)


async def perform_on_forgotten(ctx: Context, actions: list[tuple[str, Any, Any]]) -> None:
    """The actions on a handle whose process the daemon has forgotten (an unknown id
    to it): a client of the same kind, on a daemon with ``closed_ttl=0``."""
    async with backend(ctx.kind, ctx.nursery, ServerConfig(closed_ttl=0)) as (client, _):
        handle = await client.start(["true"], tty=True)
        await wait_until_forgotten(handle)
        await perform_actions(handle, actions)


async def wait_until_forgotten(handle: ProcessHandle) -> None:
    """Until the daemon forgot the (tty) process: resize answers "unknown process id"."""
    assert await handle.wait() == 0
    while True:
        try:
            await handle.resize(10, 10)
        except exec_runtime.ProtocolError as exc:
            if "unknown process id" in exc.message:
                return


async def perform_when_closed(ctx: Context, then: str) -> None:
    client = ctx.client
    handle = await client.start(["cat"], pipe_stdin=True)
    await client.aclose()
    if then == "run":
        await client.run(["true"])
    elif then == "start":
        await client.start(["true"])
    elif then == "fs":
        await client.fs.read_file(str(ctx.root / "f"))
    elif then == "info":
        await client.environment_info()
    elif then == "write":
        await handle.write(b"x")
    elif then == "signal":
        await handle.send_signal("SIGTERM")
    elif then == "kill":
        await handle.kill()
    elif then == "wait":
        await handle.wait()
    elif then == "events":
        async for _ in handle.events():
            pass


FS_METHODS: dict[str, tuple[int, dict[str, st.SearchStrategy[Any]]]] = {
    "read_file": (1, {"sandbox": sandboxes}),
    "write_file": (2, {"sandbox": sandboxes}),
    "create_directory": (1, {"recursive": bools, "sandbox": sandboxes}),
    "get_metadata": (1, {"sandbox": sandboxes}),
    "canonicalize": (1, {}),
    "read_directory": (1, {}),
    "walk": (
        1,
        {
            "max_depth": mostly(st.integers(-2, 70)),
            "max_directories": mostly(st.integers(-2, 20_000)),
            "max_entries": mostly(st.integers(-2, 60_000)),
            "follow_directory_symlinks": bools,
            "prune_hidden_directories": bools,
            "sandbox": sandboxes,
        },
    ),
    "remove": (1, {"recursive": bools, "force": bools, "sandbox": sandboxes}),
    "copy": (2, {"recursive": bools, "sandbox": sandboxes}),
    "open_read": (1, {}),
}


@st.composite
def fs_ops(draw: st.DrawFn) -> Op:
    method = draw(st.sampled_from(sorted(FS_METHODS)))
    count, table = FS_METHODS[method]
    args = [draw(fs_paths)]
    if count == 2:
        second = datas if method == "write_file" else fs_paths
        args.append(draw(second))
    return Op(f"fs.{method}", tuple(args), draw(kwargs_of(table)))


actions = st.lists(
    st.one_of(
        st.tuples(st.just("write"), datas, st.none()),
        st.tuples(st.sampled_from(["send_signal", "signal"]), signals, st.none()),
        st.tuples(st.sampled_from(["close_stdin", "terminate", "kill"]), st.none(), st.none()),
        st.tuples(
            st.just("resize"),
            mostly(st.integers(-1, 70_000)),
            mostly(st.integers(-1, 70_000)),
        ),
    ),
    min_size=1,
    max_size=3,
)
urls = mostly(
    st.sampled_from(
        [
            "DAEMON",
            "wss://DAEMON",  # wss:// against the ws:// daemon
            "DAEMON/some/path",
            "DAEMON?q=1",
            "ws://127.0.0.1:1",
            "ws://127.0.0.1:99999",
            "ws://127.0.0.1:-1",
            "http://127.0.0.1:1",
            "ws://",
            "ws://[::1",
            "ws://user@127.0.0.1:1",
            "ws://127.0.0.1\0:1",
            "",
        ]
    )
)
OPEN_CLIENT_KWARGS = {
    "token": mostly(st.one_of(text, st.sampled_from(["a\nb", "é", "a\0b", ""]))),
    "token_file": mostly(st.one_of(st.just(Root()), st.sampled_from(["f", "missing"]).map(Under))),
    "client_name": mostly(st.one_of(text, st.just("a\0b"))),
    "ssl_context": mostly(st.none()),
    "msgpack": bools,
    "recovery_deadline": mostly(st.floats(allow_nan=True)),
    "ack_output": bools,
    "meter_provider": mostly(st.none()),
}
OPEN_LOCAL_KWARGS = {
    "config": mostly(st.just(ServerConfig())),
    "client_name": mostly(st.one_of(text, st.just("a\0b"))),
    "meter_provider": mostly(st.none()),
}


def ops(remote: bool) -> st.SearchStrategy[Op]:
    choices = [
        st.builds(lambda a, k: Op("run", (a,), k), argvs, kwargs_of(RUN_KWARGS)),
        st.builds(
            lambda w, a, k: Op(w, (a,), k),
            st.sampled_from(["start", "start-twice"]),
            argvs,
            kwargs_of(START_KWARGS),
        ),
        st.builds(lambda p, a: Op("process", (p, a)), st.booleans(), actions),
        fs_ops(),
        st.builds(
            lambda then: Op("closed", (then,)),
            st.sampled_from(
                ["run", "start", "fs", "info", "write", "signal", "kill", "wait", "events"]
            ),
        ),
        st.builds(lambda k: Op("open_local", (), k), kwargs_of(OPEN_LOCAL_KWARGS)),
        st.builds(lambda a: Op("forgotten", (a,)), actions),
    ]
    if remote:
        choices.append(
            st.builds(lambda u, k: Op("open_client", (u,), k), urls, kwargs_of(OPEN_CLIENT_KWARGS))
        )
    return st.one_of(choices)


# ---------------------------------------------------------------------------
# The property


@asynccontextmanager
async def backend(
    kind: str, nursery: trio.Nursery, config: ServerConfig | None = None
) -> AsyncIterator[tuple[ExecClient, str | None]]:
    config = config or ServerConfig()
    if kind == "local":
        async with exec_runtime.open_local(config) as client:
            yield client, None
    else:
        url = await nursery.start(exec_runtime.serve, config)
        async with exec_runtime.open_client(url) as client:
            yield client, url


def check(kind: str, root: Path, op: Op) -> None:
    """Make the call on a fresh ``kind`` client; fail unless it returned or raised a
    documented exception within CAP seconds."""
    failures: list[str] = []

    async def main() -> None:
        make_tree(root)
        with trio.move_on_after(CAP) as scope:
            async with trio.open_nursery() as nursery:
                async with backend(kind, nursery) as (client, url):
                    try:
                        await perform(op, Context(client, root, url, nursery, kind))
                    except ALLOWED as exc:
                        if not documented(exc):
                            failures.append(f"undocumented class:\n{_format(exc)}")
                    except BaseException as exc:
                        if isinstance(exc, trio.Cancelled):
                            raise
                        failures.append(f"escaped the boundary:\n{_format(exc)}")
                nursery.cancel_scope.cancel()
        if scope.cancelled_caught:
            failures.append(f"no answer within {CAP} s (a hang)")

    trio.run(main)
    assert not failures, failures[0]


FOREIGN = frozenset({"msgspec", "trio", "trio_websocket", "wsproto", "ssl", "_ssl"})


def documented(exc: BaseException) -> bool:
    """A class of the tree, or a plain TypeError/ValueError: not a library's own
    subclass of them (msgspec.ValidationError is a ValueError) nor an encoder's
    UnicodeError, which name no argument."""
    if isinstance(exc, ExecRuntimeError):
        return type(exc) in DOCUMENTED
    return (
        isinstance(exc, TypeError | ValueError)
        and type(exc).__module__.partition(".")[0] not in FOREIGN
        and not isinstance(exc, UnicodeError)
    )


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


@pytest.mark.parametrize("kind", BACKENDS)
@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_the_public_api_raises_only_documented_exceptions(
    kind: str, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    op = data.draw(ops(kind == "remote"), label="op")
    check(kind, tmp_path_factory.mktemp("example") / "root", op)


# ---------------------------------------------------------------------------
# What the property found, kept as explicit examples (each failed before its fix)

FOUND = {
    # AttributeError: 'bool' object has no attribute 'meter_provider'
    "open_local-config-bool": Op("open_local", (), {"config": True}),
    "open_local-config-dict": Op("open_local", (), {"config": {"retain_bytes": 1}}),
    # OverflowError: int too large to convert to float (check_timeout)
    "run-timeout-huge-int": Op("run", (["true"],), {"timeout": 10**400}),
    "run-timeout-huge-negative-int": Op("run", (["true"],), {"timeout": -(10**400)}),
    # UnicodeEncodeError from the wire encoder, naming no argument
    "run-argv-surrogate": Op("run", (["echo", "\udcff"],), {}),
    "start-env-surrogate": Op("start", (["true"],), {"env": {"A": "\udcff"}}),
}


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("name", list(FOUND))
def test_found_examples(kind: str, name: str, tmp_path: Path) -> None:
    check(kind, tmp_path / "root", FOUND[name])


@pytest.mark.parametrize(
    ("argv", "kwargs", "named"),
    [
        (["echo", "\udcff"], {}, "argv[1]"),
        (["true"], {"arg0": "x\udcff"}, "arg0"),
        (["true"], {"env": {"A": "\udcff"}}, "env['A']"),
        (["true"], {"env": {"\udcff": "1"}}, "env: variable name"),
        (["true"], {"env_policy": {"set": {"A": "\udcff"}}}, "EnvPolicy set['A']"),
    ],
)
async def test_text_the_wire_cannot_carry_is_a_value_error_naming_the_argument(
    client: ExecClient, argv: list[str], kwargs: dict[str, Any], named: str
) -> None:
    """A lone surrogate (os.fsdecode's escape for bytes that are not UTF-8) cannot
    travel as UTF-8: a ValueError naming the argument, before anything is sent, instead
    of the encoder's UnicodeEncodeError. (A path can: cwd travels %-escaped.)"""
    with trio.fail_after(10):
        with pytest.raises(ValueError, match="lone surrogate") as caught:
            await client.run(argv, **kwargs)
        assert not isinstance(caught.value, UnicodeError)
        assert str(caught.value).startswith(named)
        assert client.statistics().calls.get("process/start", 0) == 0


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("copy", {"recursive": 1}),
        ("remove", {"force": "yes"}),
        ("remove", {"recursive": None}),
        ("create_directory", {"recursive": None}),
        ("walk", {"max_depth": None}),
        ("walk", {"max_entries": 1.5}),
        ("walk", {"follow_directory_symlinks": "no"}),
        ("write_file", {"data": "text"}),
    ],
)
async def test_fs_arguments_of_the_wrong_type_are_type_errors(
    client: ExecClient, tmp_path: Path, method: str, kwargs: dict[str, Any]
) -> None:
    """They reached the daemon, which answered ProtocolError -32602 (``Expected `bool`,
    got `int```); now a TypeError naming the argument, and nothing is sent."""
    kwargs = dict(kwargs)  # shared by the two backends' runs
    with trio.fail_after(10):
        (tmp_path / "f").write_bytes(b"x")
        target = str(tmp_path / ("f" if method in ("copy", "remove") else "new"))
        args: list[Any] = [target]
        if method == "copy":
            args.append(str(tmp_path / "g"))
        if method == "write_file":
            args.append(kwargs.pop("data"))
        with pytest.raises(TypeError) as caught:
            await getattr(client.fs, method)(*args, **kwargs)
        assert not isinstance(caught.value, ExecRuntimeError)
        assert sorted(os.listdir(tmp_path)) == ["f"]
        assert not any(m.startswith("fs/") for m in client.statistics().calls)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"client_name": 1}, TypeError),  # was ProtocolError -32602 from initialize
        ({"client_name": "a\0b"}, ValueError),
        ({"recovery_deadline": "x"}, TypeError),  # was accepted, to fail at a reconnect
        ({"recovery_deadline": math.nan}, ValueError),
        ({"recovery_deadline": -1}, ValueError),
        ({"ack_output": "x"}, TypeError),  # was ProtocolError -32602 from initialize
        ({"msgpack": "x"}, TypeError),  # was accepted
        ({"meter_provider": "x"}, TypeError),  # was "cannot create weak reference"
    ],
)
async def test_open_client_checks_its_arguments_before_connecting(
    daemon: str, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with trio.fail_after(10):
        with pytest.raises(error) as caught:
            async with exec_runtime.open_client(daemon, **kwargs):
                pass
        assert not isinstance(caught.value, ExecRuntimeError)
        assert next(iter(kwargs)) in str(caught.value)


@pytest.mark.parametrize("kind", BACKENDS)
async def test_writing_to_a_forgotten_process_is_stdin_closed(
    kind: str, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Found with the "forgotten" calls: a write or close_stdin to a process the daemon
    forgot (its closed TTL passed) raised a bare ExecRuntimeError naming the wire
    status (``unknownProcess``); it is a StdinClosedError, as for an exited one."""
    with trio.fail_after(10):
        async with backend(kind, nursery, ServerConfig(closed_ttl=0)) as (client, _):
            handle = await client.start(["true"], tty=True)
            await wait_until_forgotten(handle)
            for call in (handle.write(b"x"), handle.close_stdin()):
                with pytest.raises(exec_runtime.StdinClosedError, match="no longer knows"):
                    await call


async def test_open_local_checks_its_arguments() -> None:
    with trio.fail_after(10):
        for kwargs in ({"config": {"retain_bytes": 1}}, {"client_name": 1}, {"meter_provider": 1}):
            with pytest.raises(TypeError, match=next(iter(kwargs))):
                async with exec_runtime.open_local(**kwargs):  # type: ignore[arg-type]
                    pass
