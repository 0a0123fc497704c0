"""Processes in a pseudo-terminal at the wire (PROTOCOL.md §4 ``tty``, ``ttySize``,
``process/resize``; §5 the ``pty`` stream)."""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from exec_runtime import ServerConfig
from tests.support.daemon_process import eventually, process_gone
from tests.support.wire_client import RawClient, WireError, output_of

INVALID_REQUEST = -32600
INVALID_PARAMS = -32602


def pty_output(client: RawClient, process_id: str) -> bytes:
    return output_of(client.notifications[process_id], "pty")


async def printed(client: RawClient, process_id: str, pattern: bytes) -> re.Match[bytes]:
    """The first match of ``pattern`` in the process's terminal output, once there."""
    await eventually(lambda: re.search(pattern, pty_output(client, process_id)))
    match = re.search(pattern, pty_output(client, process_id))
    assert match is not None
    return match


def interactive_shell() -> list[str]:
    """A shell with job control on (interactive, in a terminal): it runs each job in a
    process group of its own and hands the terminal's foreground to the job it waits
    for."""
    if shutil.which("bash"):
        return ["bash", "--norc", "--noprofile", "-i"]
    return ["sh", "-i"]


SHELL_ENV = {"PATH": os.environ.get("PATH", os.defpath), "PS1": "$ ", "TERM": "dumb"}


def group_and_session(pid: int) -> tuple[int, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[2]), int(fields[3])


async def start_job(client: RawClient, process_id: str, job: bytes) -> tuple[int, int]:
    """Start ``job`` (a line that prints ``job=<pid>``) under the interactive shell
    ``process_id``; the shell's pid and the job's, which is in a group of its own in
    the shell's session."""
    await write(client, process_id, "shell", b"echo shell=$$\n")
    shell = int((await printed(client, process_id, rb"shell=(\d+)"))[1])
    await write(client, process_id, "job", job + b"\n")
    pid = int((await printed(client, process_id, rb"job=(\d+)"))[1])
    assert group_and_session(pid) == (pid, shell)
    return shell, pid


async def write(client: RawClient, process_id: str, write_id: str, data: bytes) -> str:
    params = {
        "processId": process_id,
        "writeId": write_id,
        "chunk": base64.b64encode(data).decode(),
    }
    return str((await client.call("process/write", params))["status"])


async def test_tty_runs_in_a_pseudo_terminal(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("t", ["tty"], tty=True)
        events = await client.wait_closed("t")
        # One stream, "pty"; the terminal turns \n into \r\n.
        assert {m["params"]["stream"] for m in events if m["method"] == "process/output"} == {"pty"}
        assert re.fullmatch(rb"/dev/pts/\d+\r\n", output_of(events, "pty"))
        assert events[-2]["params"]["exitCode"] == 0
        assert [m["params"]["seq"] for m in events] == list(range(1, len(events) + 1))
        # Without tty the same program has no terminal.
        await client.start("n", ["tty"])
        events = await client.wait_closed("n")
        assert output_of(events, "stdout") == b"not a tty\n"
        assert events[-2]["params"]["exitCode"] == 1


async def test_the_pty_is_the_controlling_terminal_of_a_new_session(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        # /dev/tty opens only for a process with a controlling terminal.
        script = "echo ok > /dev/tty && echo $$ && ps -o sid= -p $$"
        await client.start("t", ["sh", "-c", script], tty=True)
        words = output_of(await client.wait_closed("t"), "pty").decode().split()
        assert words[0] == "ok"
        assert words[1] == words[2]  # the shell leads its own session


async def test_default_size_is_24_by_80(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("t", ["stty", "size"], tty=True)
        assert output_of(await client.wait_closed("t"), "pty") == b"24 80\r\n"


async def test_tty_size_is_honoured(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("t", ["stty", "size"], tty=True, ttySize={"rows": 40, "cols": 132})
        assert output_of(await client.wait_closed("t"), "pty") == b"40 132\r\n"


async def test_resize_changes_what_the_child_sees(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        script = "stty size; read line; stty size"
        await client.start("t", ["sh", "-c", script], tty=True)
        await eventually(lambda: b"24 80\r\n" in pty_output(client, "t"))
        assert (
            await client.call("process/resize", {"processId": "t", "rows": 50, "cols": 100}) == {}
        )
        assert await write(client, "t", "w1", b"go\n") == "accepted"
        events = await client.wait_closed("t")
        output = output_of(events, "pty")
        assert output.startswith(b"24 80\r\n")
        assert output.endswith(b"50 100\r\n")
        assert events[-2]["params"]["exitCode"] == 0


async def test_tty_sizes_out_of_range_are_32602(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        for size in ({"rows": 0, "cols": 80}, {"rows": 24, "cols": 70000}):
            with pytest.raises(WireError) as caught:
                await client.start("t", ["true"], tty=True, ttySize=size)
            assert caught.value.code == INVALID_PARAMS
        await client.start("t", ["cat"], tty=True)
        for rows, cols in ((0, 80), (24, -1), (70000, 80)):
            with pytest.raises(WireError) as caught:
                await client.call("process/resize", {"processId": "t", "rows": rows, "cols": cols})
            assert caught.value.code == INVALID_PARAMS
        await client.call("process/terminate", {"processId": "t"})


async def test_resize_of_a_non_tty_process_is_32600(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("p", ["sleep", "100"])
        with pytest.raises(WireError) as caught:
            await client.call("process/resize", {"processId": "p", "rows": 10, "cols": 10})
        assert caught.value.code == INVALID_REQUEST
        with pytest.raises(WireError) as caught:
            await client.call("process/resize", {"processId": "nope", "rows": 10, "cols": 10})
        assert (caught.value.code, caught.value.message) == (
            INVALID_REQUEST,
            "unknown process id nope",
        )
        await client.call("process/terminate", {"processId": "p"})


async def test_writes_reach_a_pty_process(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("t", ["sh", "-c", "read a; echo got:$a; read b; echo got:$b"], tty=True)
        assert await write(client, "t", "w1", b"first\n") == "accepted"
        assert await write(client, "t", "w1", b"first\n") == "accepted"  # deduped
        await eventually(lambda: b"got:first\r\n" in pty_output(client, "t"))
        assert await write(client, "t", "w2", b"second\n") == "accepted"
        events = await client.wait_closed("t")
        # The terminal echoes input; each line was written exactly once.
        assert output_of(events, "pty") == b"first\r\ngot:first\r\nsecond\r\ngot:second\r\n"


async def test_close_stdin_on_a_pty_ends_input(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.start("t", ["cat"], tty=True)
        assert await write(client, "t", "w1", b"line\n") == "accepted"
        params = {"processId": "t", "writeId": "w2", "closeStdin": True}
        assert await client.call("process/write", params) == {"status": "accepted"}
        events = await client.wait_closed("t")
        assert output_of(events, "pty") == b"line\r\nline\r\n"
        assert events[-2]["params"]["exitCode"] == 0


async def test_interrupt_reaches_the_pty_foreground(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        script = "trap 'echo int; exit 5' INT; echo ready; while :; do sleep 0.05; done"
        await client.start("t", ["sh", "-c", script], tty=True)
        await eventually(lambda: b"ready" in pty_output(client, "t"))
        await client.call("process/signal", {"processId": "t", "signal": "interrupt"})
        events = await client.wait_closed("t")
        assert output_of(events, "pty") == b"ready\r\nint\r\n"
        assert events[-2]["params"]["exitCode"] == 5


async def test_interrupt_reaches_the_foreground_job_of_an_interactive_shell(
    connect: Any,
) -> None:
    """The job the shell waits for is in a group of its own, the terminal's foreground
    one: interrupt reaches it there, as Ctrl-C would; the shell's own group alone (the
    letter of PROTOCOL §4) holds only the shell, which ignores it."""
    with trio.fail_after(10):
        client = await connect()
        await client.start("t", interactive_shell(), tty=True, env=SHELL_ENV)
        # The job prints once it has the terminal (the shell hands it over before exec).
        _, job = await start_job(client, "t", b"sh -c 'echo job=$$; exec sleep 66'")
        await client.call("process/signal", {"processId": "t", "signal": "interrupt"})
        await eventually(lambda: process_gone(job))
        # The shell is alive and takes the next command.
        await write(client, "t", "next", b"echo alive-$((6*7))\n")
        await printed(client, "t", rb"alive-42")
        assert await client.call("process/terminate", {"processId": "t"}) == {"running": True}
        await client.wait_closed("t")


async def test_terminate_kills_a_background_job_of_an_interactive_shell_and_it_closes(
    connect: Any,
) -> None:
    """A background job has a group of its own and holds the terminal: terminate kills
    the whole session, so the process closes and the job does not outlive it."""
    with trio.fail_after(10):
        client = await connect()
        await client.start("t", interactive_shell(), tty=True, env=SHELL_ENV)
        shell, job = await start_job(client, "t", b"sleep 77 & echo job=$!")
        assert await client.call("process/terminate", {"processId": "t"}) == {"running": True}
        events = await client.wait_closed("t")
        assert events[-2]["params"]["exitCode"] == 137
        await eventually(lambda: process_gone(job))
        assert process_gone(shell)


async def test_terminate_after_the_shell_exited_kills_the_job_holding_the_terminal(
    connect: Any,
) -> None:
    """The shell exited and left a background job that holds the terminal, so the
    process does not close: terminate answers not running (PROTOCOL §4) but still
    kills the job, which is in the shell's session, and the process closes."""
    with trio.fail_after(10):
        client = await connect()
        await client.start("t", interactive_shell(), tty=True, env=SHELL_ENV)
        _, job = await start_job(client, "t", b"sleep 77 & echo job=$!")
        await write(client, "t", "exit", b"exit\n")
        await eventually(
            lambda: any(m["method"] == "process/exited" for m in client.notifications["t"])
        )
        assert not process_gone(job)
        assert await client.call("process/terminate", {"processId": "t"}) == {"running": False}
        await client.wait_closed("t")
        await eventually(lambda: process_gone(job))


@pytest.mark.parametrize("server_config", [ServerConfig(detached_ttl=0.2)])
async def test_the_sessions_end_kills_a_background_job_of_an_interactive_shell(
    connect: Any,
) -> None:
    with trio.fail_after(10):
        client = await connect()
        await client.start("t", interactive_shell(), tty=True, env=SHELL_ENV)
        shell, job = await start_job(client, "t", b"sleep 77 & echo job=$!")
        await client.ws.aclose()  # detached: the session ends at its TTL
        await eventually(lambda: process_gone(job) and process_gone(shell))
