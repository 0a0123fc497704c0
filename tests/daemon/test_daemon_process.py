"""Process methods, notifications, the per-process sequence and retention at the wire
(PROTOCOL.md §4-§6), with real processes behind a real WebSocket."""

from __future__ import annotations

import base64
import errno
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from exec_runtime import ServerConfig
from exec_runtime._daemon.child import (
    Child,
    ChildExited,
    ChildMessage,
    SpawnSpec,
    StreamEnded,
    spawn,
)
from tests.support.daemon_process import eventually, process_gone
from tests.support.daemon_state import track_daemon
from tests.support.wire_client import RawClient, WireError, output_of

INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

SH = "sh"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def shape(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Notifications as comparable tuples: (seq, kind, stream or exit code[, bytes])."""
    result: list[tuple[Any, ...]] = []
    for message in events:
        params = message["params"]
        kind = message["method"].removeprefix("process/")
        if kind == "output":
            chunk = base64.b64decode(params["chunk"])
            result.append((params["seq"], kind, params["stream"], chunk))
        elif kind == "exited":
            result.append((params["seq"], kind, params["exitCode"], params["sandboxDenied"]))
        else:
            result.append((params["seq"], kind))
    return result


async def wait_method(client: RawClient, process_id: str, method: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        return next((m for m in client.notifications[process_id] if m["method"] == method), None)

    await eventually(found)
    result = found()
    assert result is not None
    return result


async def expect_error(awaitable: Any) -> tuple[int, str]:
    with pytest.raises(WireError) as caught:
        await awaitable
    return caught.value.code, caught.value.message


def read_stat(text: str) -> dict[str, int]:
    fields = text.rsplit(")", 1)[1].split()
    return {"ppid": int(fields[1]), "pgrp": int(fields[2]), "session": int(fields[3])}


# --- §5 the per-process sequence -------------------------------------------------------


async def test_canonical_sequence(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        result = await client.start("p", [SH, "-c", "printf out; printf err >&2; exit 7"])
        assert result == {"processId": "p", "sandboxType": "none"}
        events = await client.wait_closed("p")
        assert shape(events) == [
            (1, "output", "stdout", b"out"),
            (2, "output", "stderr", b"err"),
            (3, "exited", 7, False),
            (4, "closed"),
        ]
        # Every notification names the process; nothing follows closed (not even by
        # the time a later process has run and closed on the same connection).
        assert all(m["params"]["processId"] == "p" for m in events)
        await client.start("later", ["true"])
        await client.wait_closed("later")
        assert len(client.notifications["p"]) == 4
        read = await client.call("process/read", {"processId": "p"})
        assert read == {
            "chunks": [
                {"seq": 1, "stream": "stdout", "chunk": b64(b"out")},
                {"seq": 2, "stream": "stderr", "chunk": b64(b"err")},
            ],
            "nextSeq": 5,
            "exited": True,
            "exitCode": 7,
            "closed": True,
            "failure": None,
            "sandboxDenied": False,
            "earliestRetainedSeq": 1,
        }


async def test_the_canonical_sequence_is_stable(connect: Any) -> None:
    """Output written before the exit always precedes it, stdout before stderr."""
    with trio.fail_after(10):
        client = await connect()
        for number in range(30):
            await client.start(f"p{number}", [SH, "-c", "printf out; printf err >&2; exit 7"])
        for number in range(30):
            events = await client.wait_closed(f"p{number}")
            assert [e[:3] for e in shape(events)] == [
                (1, "output", "stdout"),
                (2, "output", "stderr"),
                (3, "exited", 7),
                (4, "closed"),
            ]


async def test_output_after_exit_from_a_grandchild(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("late", [SH, "-c", "(sleep 0.3; echo late) & exit 0"])
        events = await client.wait_closed("late")
        assert shape(events) == [
            (1, "exited", 0, False),
            (2, "output", "stdout", b"late\n"),
            (3, "closed"),
        ]


async def test_closed_waits_for_both_streams_and_the_exit(connect: Any, tmp_path: Path) -> None:
    with trio.fail_after(5):
        client = await connect()
        # stdout ends first; stderr carries on; then the exit.
        await client.start("p", [SH, "-c", "exec 1>&-; sleep 0.2; printf e >&2; exit 3"])
        events = await client.wait_closed("p")
        assert shape(events) == [
            (1, "output", "stderr", b"e"),
            (2, "exited", 3, False),
            (3, "closed"),
        ]
        # The exit first, stderr held open silently by a grandchild until we let it go
        # (after a later process ran and closed on the same connection).
        gate = tmp_path / "go"
        holder = f"while [ ! -e {gate} ]; do sleep 0.01; done"
        await client.start("q", [SH, "-c", f"exec 1>&-; ({holder}) & exit 0"])
        exited = await wait_method(client, "q", "process/exited")
        assert exited["params"]["seq"] == 1
        await client.start("later", ["true"])
        await client.wait_closed("later")
        assert [m["method"] for m in client.notifications["q"]] == ["process/exited"]
        gate.touch()
        events = await client.wait_closed("q")
        assert shape(events) == [(1, "exited", 0, False), (2, "closed")]


async def test_death_by_signal_n_is_exit_code_128_plus_n(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("segv", [SH, "-c", "kill -SEGV $$"])
        await client.start("term", [SH, "-c", "kill -TERM $$"])
        await client.start("code", [SH, "-c", "exit 200"])
        for process_id, code in [("segv", 139), ("term", 143), ("code", 200)]:
            events = await client.wait_closed(process_id)
            assert shape(events) == [(1, "exited", code, False), (2, "closed")]


async def test_three_megabytes_arrive_byte_exact_with_contiguous_seqs(connect: Any) -> None:
    with trio.fail_after(10):
        client = await connect(max_message_size=16 << 20)  # the read below is > 1 MiB
        size = 3_000_000
        script = (
            f"import random, sys\nsys.stdout.buffer.write(random.Random(7).randbytes({size}))\n"
        )
        await client.start("big", [sys.executable, "-c", script])
        events = await client.wait_closed("big")
        expected = random.Random(7).randbytes(size)
        assert output_of(events, "stdout") == expected
        assert output_of(events, "stderr") == b""
        seqs = [m["params"]["seq"] for m in events]
        assert seqs == list(range(1, len(events) + 1))
        assert [m["method"] for m in events[-2:]] == ["process/exited", "process/closed"]
        assert events[-2]["params"]["exitCode"] == 0
        # Retention (1 MiB) keeps the newest whole chunks; nextSeq counts everything.
        read = await client.call("process/read", {"processId": "big"})
        assert read["nextSeq"] == len(events) + 1
        retained = b"".join(base64.b64decode(c["chunk"]) for c in read["chunks"])
        assert expected.endswith(retained)
        assert 0 < len(retained) <= 1 << 20
        assert read["earliestRetainedSeq"] == read["chunks"][0]["seq"] > 1


# --- §4 process/start ------------------------------------------------------------------


async def test_two_concurrent_starts_with_one_id_exactly_one_succeeds(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        replies: list[dict[str, Any]] = []

        async def start(word: str) -> None:
            replies.append(await client.start_request("dup", [SH, "-c", f"echo {word}"]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(start, "one")
            nursery.start_soon(start, "two")
        assert len(replies) == 2
        ok = [r for r in replies if "result" in r]
        failed = [r for r in replies if "error" in r]
        assert len(ok) == 1 and len(failed) == 1
        assert ok[0]["result"] == {"processId": "dup", "sandboxType": "none"}
        assert failed[0]["error"]["code"] == INVALID_REQUEST
        assert failed[0]["error"]["message"] == "process dup already exists"
        events = await client.wait_closed("dup")
        assert output_of(events) in (b"one\n", b"two\n")
        # Closed but within closed_ttl: the id is still taken.
        assert await expect_error(client.start("dup", ["true"])) == (
            INVALID_REQUEST,
            "process dup already exists",
        )


async def test_empty_argv_is_32602(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        assert await expect_error(client.start("p", [])) == (
            INVALID_PARAMS,
            "argv must not be empty",
        )
        # Nothing was registered.
        assert await expect_error(client.call("process/read", {"processId": "p"})) == (
            INVALID_REQUEST,
            "unknown process id p",
        )


@pytest.mark.parametrize(
    ("cwd", "errno_name"),
    [
        ("file:///no/such/directory/anywhere", "ENOENT"),
        ("file:///etc/hostname", "ENOTDIR"),  # a file, not a directory
    ],
)
async def test_a_well_formed_cwd_naming_no_directory_is_32603(
    connect: Any, cwd: str, errno_name: str
) -> None:
    """As Codex (PROTOCOL §4): the OS error, -32603; only a bad URI is -32602."""
    with trio.fail_after(5):
        client = await connect()
        reply = await client.start_request("p", ["true"], cwd=cwd)
        error = reply["error"]
        assert error["code"] == INTERNAL_ERROR, error
        path = cwd.removeprefix("file://")
        assert error["message"] == f"cwd {path}: {os.strerror(getattr(errno, errno_name))}"
        assert (error["data"]["errnoName"], error["data"]["filename"]) == (errno_name, path)


@pytest.mark.parametrize(
    "cwd",
    [
        "http://example.com/tmp",
        "file://otherhost/tmp",
        "file:relative/dir",
        "/tmp",
    ],
)
async def test_a_bad_cwd_is_32602(connect: Any, cwd: str) -> None:
    with trio.fail_after(5):
        client = await connect()
        code, message = await expect_error(client.start("p", ["true"], cwd=cwd))
        assert code == INVALID_PARAMS
        assert message.startswith(f"cwd URI {cwd} is not valid on this host: "), message
        assert len(message) > len(f"cwd URI {cwd} is not valid on this host: ")


async def test_cwd_is_a_file_uri(connect: Any, tmp_path: Path) -> None:
    with trio.fail_after(5):
        client = await connect()
        directory = tmp_path / "a dir with spaces"
        directory.mkdir()
        uri = "file://" + str(directory).replace(" ", "%20")
        await client.start("p", ["pwd"], cwd=uri)
        events = await client.wait_closed("p")
        assert output_of(events) == f"{directory}\n".encode()


async def test_spawn_failure_is_32603_and_the_id_stays_free(connect: Any, tmp_path: Path) -> None:
    with trio.fail_after(5):
        client = await connect()
        code, message = await expect_error(client.start("p", ["no-such-program-xyzzy"]))
        assert code == INTERNAL_ERROR
        assert "No such file or directory" in message
        not_executable = tmp_path / "data.txt"
        not_executable.write_text("hello")
        code, message = await expect_error(client.start("p", [str(not_executable)]))
        assert code == INTERNAL_ERROR
        assert "Permission denied" in message
        await client.start("p", ["true"])
        events = await client.wait_closed("p")
        assert shape(events) == [(1, "exited", 0, False), (2, "closed")]


async def test_argv0_is_resolved_on_the_daemons_path(
    connect: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(5):
        tool = tmp_path / "bin" / "exec-runtime-test-tool"
        tool.parent.mkdir()
        tool.write_text('#!/bin/sh\necho tool ran with "$@"\n')
        tool.chmod(0o755)
        monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
        client = await connect()
        # The child's env has no PATH at all: the lookup uses the daemon's.
        await client.start("a", ["exec-runtime-test-tool", "x"], env={"HOME": "/"})
        # The child's PATH names other directories: still the daemon's.
        await client.start("b", ["exec-runtime-test-tool", "y"], env={"PATH": "/nonexistent"})
        assert output_of(await client.wait_closed("a")) == b"tool ran with x\n"
        assert output_of(await client.wait_closed("b")) == b"tool ran with y\n"


async def test_arg0_overrides_what_the_child_sees(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        script = "tr '\\0' '|' < /proc/$$/cmdline"
        await client.start("p", [SH, "-c", script], arg0="custom-name")
        await client.start("q", [SH, "-c", script])
        assert output_of(await client.wait_closed("p")) == f"custom-name|-c|{script}|".encode()
        assert output_of(await client.wait_closed("q")) == f"sh|-c|{script}|".encode()


def parse_env(data: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in data.decode().split("\0") if line)


async def test_env_without_a_policy_is_the_exact_environment(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        env = {"ONLY_THIS": "1", "AND_THIS": "two words", "MY_SECRET_TOKEN": "kept: asked for"}
        await client.start("p", ["env", "-0"], env=env)
        assert parse_env(output_of(await client.wait_closed("p"))) == env
        await client.start("q", ["env", "-0"], env={})
        assert parse_env(output_of(await client.wait_closed("q"))) == {}


async def test_env_policy_builds_on_the_daemons_environment(
    connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(5):
        monkeypatch.setenv("EXEC_TEST_PLAIN", "plain")
        monkeypatch.setenv("EXEC_TEST_SECRET", "hidden")
        monkeypatch.setenv("exec_test_api_key", "hidden too")
        monkeypatch.setenv("EXEC_TEST_OTHER", "other")
        client = await connect()

        async def child_env(process_id: str, **params: Any) -> dict[str, str]:
            params.setdefault("env", {})
            await client.start(process_id, ["env", "-0"], **params)
            return parse_env(output_of(await client.wait_closed(process_id)))

        everything = await child_env("all", envPolicy={"inherit": "all"}, env={"EXTRA": "x"})
        expected = {
            k: v
            for k, v in os.environ.items()
            if not any(w in k.upper() for w in ("KEY", "SECRET", "TOKEN", "PASSWORD"))
        }
        assert everything == {**expected, "EXTRA": "x"}
        assert everything["EXEC_TEST_PLAIN"] == "plain"
        assert "EXEC_TEST_SECRET" not in everything
        assert "exec_test_api_key" not in everything

        unfiltered = await child_env(
            "raw", envPolicy={"inherit": "all", "ignoreDefaultExcludes": True}
        )
        assert unfiltered == dict(os.environ)

        none = await child_env(
            "none", envPolicy={"inherit": "none", "set": {"A": "1", "B": "2"}}, env={"B": "3"}
        )
        assert none == {"A": "1", "B": "3"}

        narrowed = await child_env(
            "narrow",
            envPolicy={
                "inherit": "all",
                "includeOnly": ["exec_test_*"],  # globs ignore case
                "exclude": ["*OTHER"],
            },
        )
        assert narrowed == {"EXEC_TEST_PLAIN": "plain"}

        core = await child_env("core", envPolicy={"inherit": "core"})
        assert "EXEC_TEST_PLAIN" not in core
        assert core["PATH"] == os.environ["PATH"]
        assert set(core) <= {
            "HOME", "LOGNAME", "PATH", "SHELL", "USER", "USERNAME", "TMPDIR", "TEMP", "TMP",
            "LANG", "LC_ALL", "LC_CTYPE", "TERM",
        }  # fmt: skip


async def test_each_process_gets_its_own_process_group_and_session(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("p", [SH, "-c", "echo $$; cat /proc/self/stat"])
        lines = output_of(await client.wait_closed("p")).decode().splitlines()
        shell_pid = int(lines[0])
        cat = read_stat(lines[1])
        assert cat["ppid"] == shell_pid
        assert cat["pgrp"] == shell_pid  # the shell leads a new process group
        assert cat["session"] == shell_pid  # in a new session
        assert os.getpgid(0) != shell_pid


# --- §4 process/write ------------------------------------------------------------------


async def test_pipe_stdin_with_write_id_dedupe_and_close_stdin(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("cat", ["cat"], pipeStdin=True)

        async def write(write_id: str, data: bytes = b"", **extra: Any) -> str:
            params = {"processId": "cat", "writeId": write_id, "chunk": b64(data), **extra}
            result = await client.call("process/write", params)
            return str(result["status"])

        assert await write("w1", b"one\n") == "accepted"
        assert await write("w1", b"one\n") == "accepted"  # a retry: written once
        assert await write("w2", b"two\n") == "accepted"
        await eventually(lambda: output_of(client.notifications["cat"]) == b"one\ntwo\n")
        assert await write("w1", b"one\n") == "accepted"
        assert await write("w3", closeStdin=True) == "accepted"
        events = await client.wait_closed("cat")
        assert output_of(events) == b"one\ntwo\n"
        assert events[-2]["params"]["exitCode"] == 0
        # After the close: new ids are refused, remembered ones still answer accepted.
        assert await write("w4", b"late\n") == "stdinClosed"
        assert await write("w2", b"two\n") == "accepted"


async def test_close_stdin_flushes_earlier_writes_first(connect: Any) -> None:
    with trio.fail_after(10):
        client = await connect()
        await client.start("wc", ["wc", "-c"], pipeStdin=True)
        block = b"x" * 300_000
        for number in range(4):
            params = {"processId": "wc", "writeId": f"w{number}", "chunk": b64(block)}
            assert (await client.call("process/write", params))["status"] == "accepted"
        params = {"processId": "wc", "writeId": "close", "closeStdin": True}
        assert (await client.call("process/write", params))["status"] == "accepted"
        events = await client.wait_closed("wc")
        assert output_of(events).strip() == b"1200000"


async def test_write_statuses(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        params = {"processId": "nope", "writeId": "w", "chunk": b64(b"x")}
        assert await client.call("process/write", params) == {"status": "unknownProcess"}
        # Without pipeStdin the child's stdin is closed: it reads EOF at once.
        await client.start("cat", ["cat"])
        events = await client.wait_closed("cat")
        assert shape(events) == [(1, "exited", 0, False), (2, "closed")]
        params = {"processId": "cat", "writeId": "w", "chunk": b64(b"x")}
        assert await client.call("process/write", params) == {"status": "stdinClosed"}
        # The child closed its stdin itself.
        await client.start("closer", [SH, "-c", "exec 0<&-; echo ready; sleep 5"], pipeStdin=True)
        await wait_method(client, "closer", "process/output")
        statuses = []
        for number in range(20):
            params = {"processId": "closer", "writeId": f"w{number}", "chunk": b64(b"x" * 65536)}
            statuses.append((await client.call("process/write", params))["status"])
            if statuses[-1] == "stdinClosed":
                break
        assert statuses[-1] == "stdinClosed"
        assert set(statuses) <= {"accepted", "stdinClosed"}
        await client.call("process/terminate", {"processId": "closer"})


async def test_an_empty_write_id_is_32602(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("cat", ["cat"], pipeStdin=True)
        params = {"processId": "cat", "writeId": "", "chunk": b64(b"x")}
        assert await expect_error(client.call("process/write", params)) == (
            INVALID_PARAMS,
            "writeId must not be empty",
        )
        params = {"processId": "unknown", "writeId": "", "chunk": b64(b"x")}
        assert await expect_error(client.call("process/write", params)) == (
            INVALID_PARAMS,
            "writeId must not be empty",
        )
        await client.call("process/terminate", {"processId": "cat"})


async def test_an_over_long_write_id_is_32602_naming_the_field(connect: Any) -> None:
    """The daemon remembers 4,096 write ids per process, so their length is bounded."""
    with trio.fail_after(5):
        client = await connect()
        await client.start("cat", ["cat"], pipeStdin=True)
        for process_id in ("cat", "unknown"):
            params = {"processId": process_id, "writeId": "w" * 257, "chunk": b64(b"x")}
            code, message = await expect_error(client.call("process/write", params))
            assert code == INVALID_PARAMS and "writeId" in message and "256" in message
        params = {"processId": "cat", "writeId": "w" * 256, "chunk": b64(b"ok\n")}
        assert await client.call("process/write", params) == {"status": "accepted"}
        await eventually(lambda: output_of(client.notifications["cat"]) == b"ok\n")
        await client.call("process/terminate", {"processId": "cat"})


# --- §4 process/signal and process/terminate -------------------------------------------


async def test_interrupt_is_caught_by_a_trap(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        script = "trap 'echo caught; exit 3' INT; echo ready; while :; do sleep 0.05; done"
        await client.start("p", [SH, "-c", script])
        await eventually(lambda: output_of(client.notifications["p"]) == b"ready\n")
        assert await client.call("process/signal", {"processId": "p", "signal": "interrupt"}) == {}
        events = await client.wait_closed("p")
        assert output_of(events) == b"ready\ncaught\n"
        assert events[-2]["params"]["exitCode"] == 3


@pytest.mark.parametrize(
    ("name", "code"), [("interrupt", 130), ("terminate", 143), ("hangup", 129), ("kill", 137)]
)
async def test_signals_reach_the_process_and_give_128_plus_n(
    connect: Any, name: str, code: int
) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("p", ["sleep", "100"])
        assert await client.call("process/signal", {"processId": "p", "signal": name}) == {}
        events = await client.wait_closed("p")
        assert shape(events) == [(1, "exited", code, False), (2, "closed")]


async def test_signals_go_to_the_whole_group(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("p", [SH, "-c", "sleep 100 & echo $!; wait"])
        await wait_method(client, "p", "process/output")
        pid = int(output_of(client.notifications["p"]))
        await client.call("process/signal", {"processId": "p", "signal": "terminate"})
        events = await client.wait_closed("p")
        assert events[-2]["params"]["exitCode"] == 143
        await eventually(lambda: process_gone(pid))


async def test_signal_to_unknown_or_exited_process_is_a_no_op(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        assert await client.call("process/signal", {"processId": "x", "signal": "kill"}) == {}
        await client.start("p", ["true"])
        await client.wait_closed("p")
        for name in ("interrupt", "terminate", "kill", "hangup"):
            assert await client.call("process/signal", {"processId": "p", "signal": name}) == {}
        assert len(client.notifications["p"]) == 2


async def test_terminate_kills_with_137(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("p", ["sleep", "100"])
        assert await client.call("process/terminate", {"processId": "p"}) == {"running": True}
        events = await client.wait_closed("p")
        assert shape(events) == [(1, "exited", 137, False), (2, "closed")]
        assert await client.call("process/terminate", {"processId": "p"}) == {"running": False}
        assert await client.call("process/terminate", {"processId": "x"}) == {"running": False}


async def test_terminate_after_exit_but_before_closed_is_not_running(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("p", [SH, "-c", "sleep 100 & echo $!; exit 0"])
        await wait_method(client, "p", "process/exited")
        pid = int(output_of(client.notifications["p"]))
        assert not process_gone(pid)
        assert not any(m["method"] == "process/closed" for m in client.notifications["p"])
        # Exited: not running. The group is still killed, so the grandchild that holds
        # the pipes dies and the process closes.
        assert await client.call("process/terminate", {"processId": "p"}) == {"running": False}
        events = await client.wait_closed("p")
        assert shape(events)[1:] == [(2, "exited", 0, False), (3, "closed")]
        await eventually(lambda: process_gone(pid))


@pytest.fixture
def signalled(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every ``os.killpg(pgid, signum)`` the code under test makes (still sent)."""
    calls: list[tuple[int, int]] = []
    real_killpg = os.killpg

    def spy(pgid: int, signum: int) -> None:
        calls.append((pgid, signum))
        real_killpg(pgid, signum)

    monkeypatch.setattr(os, "killpg", spy)
    return calls


async def test_terminate_after_closed_signals_nothing(
    connect: Any, signalled: list[tuple[int, int]]
) -> None:
    """Once closed, the leader is reaped and nothing holds the pipes: its group may be
    gone and its id recycled for someone else's group, so terminate must not signal."""
    with trio.fail_after(5):
        client = await connect()
        await client.start("p", [SH, "-c", "exit 3"])
        events = await client.wait_closed("p")
        assert shape(events) == [(1, "exited", 3, False), (2, "closed")]
        assert await client.call("process/terminate", {"processId": "p"}) == {"running": False}
        assert await client.call("process/signal", {"processId": "p", "signal": "kill"}) == {}
        assert signalled == []


async def test_a_child_is_not_signalled_once_its_pump_saw_the_exit_and_every_eof(
    signalled: list[tuple[int, int]],
) -> None:
    """The pump sees the leader reaped and every output at EOF before the sequencer
    records them (it may lag, under backpressure): from then on the group may be empty
    and its id recycled, so Child.signal_group must send nothing."""
    with trio.fail_after(5):
        child = await spawn(SpawnSpec(argv=[SH, "-c", "exit 3"], cwd=os.getcwd(), env={}))
        # Unbuffered, and nobody receiving once the exit is seen: the pump waits to
        # hand over its last batch, as behind a sequencer that lags.
        send, receive = trio.open_memory_channel[list[ChildMessage]](0)
        seen: list[ChildMessage] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child.run, send)
            # The pump sets returncode once it has reaped the leader and drained its
            # pipes (no grandchild holds them: all are at EOF by then), just before it
            # sends the batch with the exit.
            while child.returncode is None:
                try:
                    seen += receive.receive_nowait()  # earlier batches (EOFs)
                except trio.WouldBlock:
                    await trio.sleep(0.001)
            assert child.signal_group(signal.SIGKILL) is False
            assert child.signal_group(signal.SIGTERM) is False
            assert signalled == []
            assert child.group_released
            async for batch in receive:
                seen += batch
        assert ChildExited(3) in seen
        assert {m.stream for m in seen if isinstance(m, StreamEnded)} == {"stdout", "stderr"}
        assert signalled == []


@asynccontextmanager
async def exited_child(spec: SpawnSpec) -> AsyncIterator[tuple[Child, list[ChildMessage]]]:
    """Spawn and pump ``spec``; the body runs once the leader's exit was seen, and every
    message (the EOFs too) is in the list once the block is left."""
    child = await spawn(spec)
    send, receive = trio.open_memory_channel[list[ChildMessage]](0)
    seen: list[ChildMessage] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(child.run, send)
        while not any(isinstance(m, ChildExited) for m in seen):
            seen += await receive.receive()
        yield child, seen
        async for batch in receive:
            seen += batch


async def test_a_child_whose_leader_exited_while_a_grandchild_holds_a_pipe_is_signalled(
    signalled: list[tuple[int, int]],
) -> None:
    """The grandchild holding the pipe is in the group, so the group id is not free:
    the group is still killed (that is what lets the process close)."""
    with trio.fail_after(5):
        argv = [SH, "-c", "sleep 100 & exit 0"]
        spec = SpawnSpec(argv=argv, cwd=os.getcwd(), env=dict(os.environ))
        async with exited_child(spec) as (child, seen):
            assert child.signal_group(signal.SIGKILL) is True
            assert not child.group_released
        assert signalled == [(child.pid, signal.SIGKILL)]
        assert {m.stream for m in seen if isinstance(m, StreamEnded)} == {"stdout", "stderr"}


NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")


def spawn_with_pid(pid: int, argv: list[str]) -> subprocess.Popen[bytes] | None:
    """A new session (so a new group) whose leader gets ``pid``: the kernel hands out
    the id after ``ns_last_pid`` if it is free. None if another process took it first."""
    for _ in range(20):
        NS_LAST_PID.write_text(str(pid - 1))
        impostor = subprocess.Popen(argv, start_new_session=True)
        if impostor.pid == pid:
            return impostor
        impostor.kill()
        impostor.wait()
    return None


@pytest.mark.skipif(not os.access(NS_LAST_PID, os.W_OK), reason="needs root (ns_last_pid)")
async def test_a_recycled_group_id_is_not_signalled_while_a_setsid_grandchild_holds_a_pipe(
    tmp_path: Path,
) -> None:
    """The leader exited and was reaped; a grandchild that left the group (its own
    session) still holds stdout, so the outputs are open and the group is not released
    by that rule. But the group is empty, and its id is free: once the kernel gives it
    to an unrelated group (here on purpose, through ns_last_pid), a kill of "our"
    group would hit that one."""
    holder_pid_file = tmp_path / "holder"
    script = f"setsid sh -c 'echo $$ > {holder_pid_file}; exec sleep 30' & exit 0"
    with trio.fail_after(10):
        spec = SpawnSpec(argv=[SH, "-c", script], cwd=os.getcwd(), env={})
        async with exited_child(spec) as (child, seen):
            await eventually(holder_pid_file.exists)
            await eventually(lambda: holder_pid_file.read_text().strip() != "")
            holder = int(holder_pid_file.read_text())
            assert not child.group_released  # stdout is still open (the holder has it)
            impostor = spawn_with_pid(child.pid, ["sleep", "30"])
            if impostor is None:
                os.kill(holder, signal.SIGKILL)
                pytest.skip(f"pid {child.pid} was taken by another process")
            try:
                assert os.getpgid(impostor.pid) == child.pid  # the same group id, not ours
                assert child.signal_group(signal.SIGKILL) is False
                assert await child.send_signal(signal.SIGTERM) is False
                assert child.kill() is False
                # Untouched: the first fatal signal decides how a process dies, and
                # the one that kills it is ours, sent after all of the above.
                impostor.send_signal(signal.SIGUSR1)
                assert impostor.wait() == -signal.SIGUSR1
            finally:
                impostor.kill()
                impostor.wait()
                os.kill(holder, signal.SIGKILL)  # lets stdout reach EOF
        assert {m.stream for m in seen if isinstance(m, StreamEnded)} == {"stdout", "stderr"}


@pytest.mark.parametrize("server_config", [ServerConfig(_start_delay=1.0)])
async def test_terminate_while_starting_cancels_the_start(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        replies: list[dict[str, Any]] = []

        async def start() -> None:
            replies.append(await client.start_request("p", ["sleep", "100"]))

        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(start)
            while True:
                reply = await client.request("process/read", {"processId": "p"})
                if reply["error"]["message"] != "unknown process id p":
                    break
            # While starting: read is an error, write says so, signal is a no-op.
            assert (reply["error"]["code"], reply["error"]["message"]) == (
                INVALID_REQUEST,
                "process id p is starting",
            )
            params = {"processId": "p", "writeId": "w", "chunk": b64(b"x")}
            assert await client.call("process/write", params) == {"status": "starting"}
            assert await client.call("process/signal", {"processId": "p", "signal": "kill"}) == {}
            assert await client.call("process/terminate", {"processId": "p"}) == {"running": True}
        assert trio.current_time() - began < 0.9  # cancelled, not waited out
        assert replies == [
            {
                "id": replies[0]["id"],
                "error": {"code": INVALID_REQUEST, "message": "process p start was cancelled"},
            }
        ]
        assert await expect_error(client.call("process/read", {"processId": "p"})) == (
            INVALID_REQUEST,
            "unknown process id p",
        )
        assert client.notifications["p"] == []


async def test_a_long_poll_read_does_not_block_terminate(
    connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = track_daemon(monkeypatch)
    with trio.fail_after(5):
        client = await connect()
        await client.start("p", ["sleep", "100"])
        reads: list[dict[str, Any]] = []

        async def long_poll() -> None:
            params = {"processId": "p", "waitMs": 30_000}
            reads.append(await client.call("process/read", params))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(long_poll)
            await eventually(lambda: daemon.long_polling("p"))  # the read waits
            assert reads == []
            with trio.fail_after(1):
                assert await client.call("process/terminate", {"processId": "p"}) == {
                    "running": True
                }
        assert reads[0]["exited"] is True
        assert reads[0]["exitCode"] == 137


# --- §4 process/read -------------------------------------------------------------------


async def test_read_of_an_unknown_process_is_32600(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        assert await expect_error(client.call("process/read", {"processId": "nope"})) == (
            INVALID_REQUEST,
            "unknown process id nope",
        )
        params = {"processId": "nope", "waitMs": 1000}
        assert await expect_error(client.call("process/read", params)) == (
            INVALID_REQUEST,
            "unknown process id nope",
        )


async def test_read_returns_at_once_when_a_chunk_is_available(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("p", [SH, "-c", "echo hi; sleep 100"])
        await wait_method(client, "p", "process/output")
        began = trio.current_time()
        read = await client.call("process/read", {"processId": "p", "waitMs": 3000})
        assert trio.current_time() - began < 1
        assert read["chunks"] == [{"seq": 1, "stream": "stdout", "chunk": b64(b"hi\n")}]
        assert (read["nextSeq"], read["exited"], read["closed"]) == (2, False, False)
        assert read["exitCode"] is None
        # Without waitMs a read never waits.
        began = trio.current_time()
        read = await client.call("process/read", {"processId": "p", "afterSeq": 1})
        assert trio.current_time() - began < 1
        assert read["chunks"] == [] and read["nextSeq"] == 2
        await client.call("process/terminate", {"processId": "p"})


async def test_read_waits_for_output_then_returns(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("p", [SH, "-c", "sleep 0.3; echo later; sleep 100"])
        began = trio.current_time()
        read = await client.call("process/read", {"processId": "p", "waitMs": 3000})
        elapsed = trio.current_time() - began
        assert 0.2 < elapsed < 2
        assert read["chunks"] == [{"seq": 1, "stream": "stdout", "chunk": b64(b"later\n")}]
        await client.call("process/terminate", {"processId": "p"})


async def test_read_returns_at_the_deadline(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("p", ["sleep", "100"])
        began = trio.current_time()
        read = await client.call("process/read", {"processId": "p", "waitMs": 300})
        elapsed = trio.current_time() - began
        assert 0.29 <= elapsed < 1.5
        assert read == {
            "chunks": [],
            "nextSeq": 1,
            "exited": False,
            "exitCode": None,
            "closed": False,
            "failure": None,
            "sandboxDenied": False,
            "earliestRetainedSeq": 1,
        }
        await client.call("process/terminate", {"processId": "p"})


async def test_read_after_exit_returns_at_once_unless_the_cursor_covers_it(
    connect: Any,
) -> None:
    with trio.fail_after(5):
        client = await connect()
        # Exits at once; a silent grandchild keeps the pipes open for 0.5 s.
        await client.start("p", [SH, "-c", "(sleep 0.5) & exit 4"])
        await wait_method(client, "p", "process/exited")
        began = trio.current_time()
        read = await client.call("process/read", {"processId": "p", "waitMs": 3000})
        assert trio.current_time() - began < 0.3  # exited and afterSeq < nextSeq - 1
        assert read["chunks"] == []
        assert (read["nextSeq"], read["exited"], read["exitCode"], read["closed"]) == (
            2,
            True,
            4,
            False,
        )
        # The cursor covers the exit: wait for closed instead of spinning.
        read = await client.call("process/read", {"processId": "p", "afterSeq": 1, "waitMs": 3000})
        assert trio.current_time() - began > 0.3
        assert (read["nextSeq"], read["exited"], read["closed"]) == (3, True, True)
        assert read["chunks"] == []


async def test_read_returns_at_once_when_closed(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("p", [SH, "-c", "printf a"])
        await client.wait_closed("p")
        began = trio.current_time()
        read = await client.call("process/read", {"processId": "p", "afterSeq": 3, "waitMs": 3000})
        assert trio.current_time() - began < 0.5
        assert read["chunks"] == [] and read["closed"] is True and read["nextSeq"] == 4


async def test_max_bytes_and_next_seq(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        script = "printf aa; sleep 0.1; printf bbb; sleep 0.1; printf cccc; exit 0"
        await client.start("p", [SH, "-c", script])
        events = await client.wait_closed("p")
        assert shape(events) == [
            (1, "output", "stdout", b"aa"),
            (2, "output", "stdout", b"bbb"),
            (3, "output", "stdout", b"cccc"),
            (4, "exited", 0, False),
            (5, "closed"),
        ]

        async def read(**params: Any) -> tuple[list[int], int]:
            result = await client.call("process/read", {"processId": "p", **params})
            return [c["seq"] for c in result["chunks"]], result["nextSeq"]

        # Without maxBytes: every chunk; nextSeq is the next unassigned seq.
        assert await read() == ([1, 2, 3], 6)
        assert await read(afterSeq=1) == ([2, 3], 6)
        # With maxBytes: add chunks while the total stays <= maxBytes.
        assert await read(maxBytes=5) == ([1, 2], 3)
        assert await read(maxBytes=4) == ([1], 2)
        assert await read(maxBytes=9) == ([1, 2, 3], 4)
        assert await read(maxBytes=100) == ([1, 2, 3], 4)
        # The first chunk is always included, even over maxBytes.
        assert await read(maxBytes=0) == ([1], 2)
        assert await read(afterSeq=2, maxBytes=1) == ([3], 4)
        # Nothing returned: nextSeq is the next unassigned seq.
        assert await read(afterSeq=3, maxBytes=10) == ([], 6)
        assert await read(afterSeq=5) == ([], 6)
        code, message = await expect_error(
            client.call("process/read", {"processId": "p", "maxBytes": -1})
        )
        assert code == INVALID_PARAMS and "maxBytes" in message


# --- §6 retention ----------------------------------------------------------------------


@pytest.mark.parametrize("server_config", [ServerConfig(closed_ttl=0.2)])
async def test_a_closed_process_is_forgotten_after_closed_ttl(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("p", [SH, "-c", "echo first"])
        await client.wait_closed("p")
        read = await client.call("process/read", {"processId": "p"})
        assert read["closed"] is True
        while True:  # until its closed TTL passed (the fail_after bounds it)
            try:
                await client.call("process/read", {"processId": "p"})
            except WireError:
                break
            await trio.sleep(0.02)
        assert await expect_error(client.call("process/read", {"processId": "p"})) == (
            INVALID_REQUEST,
            "unknown process id p",
        )
        assert await client.call("process/terminate", {"processId": "p"}) == {"running": False}
        # The id is free again.
        client.notifications["p"].clear()
        await client.start("p", [SH, "-c", "echo second"])
        events = await client.wait_closed("p")
        assert output_of(events) == b"second\n"
        assert events[0]["params"]["seq"] == 1


@pytest.mark.parametrize("server_config", [ServerConfig(closed_ttl=0.2)])
async def test_an_exited_but_not_closed_process_is_never_evicted(
    connect: Any, tmp_path: Path
) -> None:
    with trio.fail_after(5):
        client = await connect()
        gate = tmp_path / "go"
        grandchild = f"(while [ ! -e {gate} ]; do sleep 0.01; done; echo bye) & exit 0"
        await client.start("p", [SH, "-c", grandchild])
        await wait_method(client, "p", "process/exited")
        # Past closed_ttl since the exit: a process that closed after p's exit has
        # been forgotten since.
        await client.start("c", ["true"])
        await client.wait_closed("c")
        while True:
            try:
                await client.call("process/read", {"processId": "c"})
            except WireError:
                break
            await trio.sleep(0.02)
        read = await client.call("process/read", {"processId": "p"})
        assert (read["exited"], read["closed"]) == (True, False)
        gate.touch()
        read = await client.read_all("p")
        assert [base64.b64decode(c["chunk"]) for c in read["chunks"]] == [b"bye\n"]
        assert read["nextSeq"] == 4


# --- process/ack (extension): unacknowledged output is held, never evicted -----------------

WINDOW = 8192
BIG_WRITER = [sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'z' * 300_000)"]


@pytest.mark.parametrize(
    "server_config", [ServerConfig(retain_bytes=WINDOW // 4, ack_window_bytes=WINDOW)]
)
async def test_an_acking_client_pauses_the_process_at_the_window_and_acks_resume_it(
    connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = track_daemon(monkeypatch)
    with trio.fail_after(20):
        client: RawClient = await connect(handshake=False)
        await client.call("initialize", {"clientName": "t", "processAck": True})
        await client.notify("initialized")
        await client.start("w", BIG_WRITER)
        # Held at the window (no ack yet), and all it published before has arrived.
        await eventually(
            lambda: daemon.paused("w")
            and len(client.notifications["w"]) == daemon.recorded_seq("w")
        )
        held = [m for m in client.notifications["w"] if m["method"] == "process/output"]
        held_bytes = sum(len(base64.b64decode(m["params"]["chunk"])) for m in held)
        assert WINDOW // 4 < held_bytes <= WINDOW
        assert not any(m["method"] == "process/exited" for m in client.notifications["w"])
        # Past retain_bytes, yet all unacknowledged output is still retained.
        result = await client.call("process/read", {"processId": "w"})
        assert sum(len(base64.b64decode(c["chunk"])) for c in result["chunks"]) == held_bytes
        # Acknowledge as it arrives: everything flows, and nothing was ever evicted.
        acked = 0
        while not any(m["method"] == "process/closed" for m in client.notifications["w"]):
            seqs = [m["params"]["seq"] for m in client.notifications["w"]]
            if seqs and max(seqs) > acked:
                acked = max(seqs)
                await client.notify("process/ack", {"processId": "w", "seq": acked})
            await trio.sleep(0.005)
        events = await client.wait_closed("w")
    assert output_of(events) == b"z" * 300_000
    seqs = [m["params"]["seq"] for m in events]
    assert seqs == list(range(1, len(seqs) + 1))


CHUNKED_WRITER = [
    sys.executable,
    "-c",
    "import sys, time\n"
    "for i in range(8):\n"
    "    sys.stdout.buffer.write(bytes([65 + i]) * 700); sys.stdout.flush(); time.sleep(0.02)",
]


@pytest.mark.parametrize(
    "server_config", [ServerConfig(retain_bytes=WINDOW // 4, ack_window_bytes=WINDOW)]
)
async def test_an_ack_trims_what_was_held_back_to_the_retention_limit(connect: Any) -> None:
    """Unacknowledged output is held past retain_bytes; once it is acknowledged (here
    after the close, when no append would trim it) retention is back within its limit."""
    with trio.fail_after(20):
        client: RawClient = await connect(handshake=False)
        await client.call("initialize", {"clientName": "t", "processAck": True})
        await client.notify("initialized")
        await client.start("w", CHUNKED_WRITER)
        events = await client.wait_closed("w")
        held = await client.call("process/read", {"processId": "w"})
        assert sum(len(base64.b64decode(c["chunk"])) for c in held["chunks"]) == 8 * 700
        await client.notify("process/ack", {"processId": "w", "seq": events[-1]["params"]["seq"]})
        while True:
            trimmed = await client.call("process/read", {"processId": "w"})
            if trimmed["earliestRetainedSeq"] > 1:
                break
            await trio.sleep(0.01)
    retained = [base64.b64decode(c["chunk"]) for c in trimmed["chunks"]]
    assert 0 < sum(map(len, retained)) <= WINDOW // 4
    assert b"".join(retained) == output_of(events)[-sum(map(len, retained)) :]  # the newest


@pytest.mark.parametrize("server_config", [ServerConfig(retain_bytes=WINDOW)])
async def test_a_client_that_does_not_ack_keeps_the_protocol_s_evicting_window(
    connect: Any,
) -> None:
    with trio.fail_after(20):
        client: RawClient = await connect()  # initialize without processAck
        await client.start("w", BIG_WRITER)
        events = await client.wait_closed("w")  # never paused
        result = await client.call("process/read", {"processId": "w"})
    assert output_of(events) == b"z" * 300_000
    retained = sum(len(base64.b64decode(c["chunk"])) for c in result["chunks"])
    assert retained <= WINDOW
    assert result["earliestRetainedSeq"] > 1  # the start was evicted


@pytest.mark.parametrize("server_config", [ServerConfig(retain_bytes=WINDOW)])
async def test_malformed_and_stray_acks_are_ignored(connect: Any) -> None:
    with trio.fail_after(10):
        client: RawClient = await connect(handshake=False)
        await client.call("initialize", {"clientName": "t", "processAck": True})
        await client.notify("initialized")
        for params in ({"processId": "nope", "seq": 5}, {"processId": 7}, {"seq": "x"}, None):
            await client.notify("process/ack", params)
        assert await client.call("environment/status") == {"status": "ready"}
        info = await client.call("environment/info")
    assert info["capabilities"]["processAck"] is True


async def test_a_terminate_while_the_child_is_spawning_kills_it(
    connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PROTOCOL §4: a terminate that lands while starting fails the start and kills the
    child, here one that already exists: Popen (in its worker thread) is held right
    after the fork until the terminate has been answered."""
    import subprocess
    import threading

    spawned: list[int] = []
    release = threading.Event()
    real_init = subprocess.Popen.__init__

    def held_popen(self: subprocess.Popen[bytes], *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        spawned.append(self.pid)
        release.wait(5)

    monkeypatch.setattr(subprocess.Popen, "__init__", held_popen)
    with trio.fail_after(10):
        client = await connect()
        async with trio.open_nursery() as nursery:
            replies: list[dict[str, Any]] = []

            async def start() -> None:
                replies.append(await client.start_request("p", ["sleep", "30"]))

            nursery.start_soon(start)
            await eventually(lambda: spawned)
            assert not process_gone(spawned[0])
            assert await client.call("process/terminate", {"processId": "p"}) == {"running": True}
            release.set()
        assert replies[0]["error"] == {
            "code": INVALID_REQUEST,
            "message": "process p start was cancelled",
        }
        await eventually(lambda: process_gone(spawned[0]))
        reply = await client.request("process/read", {"processId": "p"})
        assert reply["error"]["message"] == "unknown process id p"
