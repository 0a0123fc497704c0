"""Signals to a real ``exec-runtime serve``: SIGHUP and SIGQUIT stop it gracefully as
SIGTERM does (exit 0, attached clients get exit, close and the close frame), SIGUSR1
logs a state summary, SIGUSR2 is ignored. Started ignoring SIGHUP (``nohup``), the
daemon keeps ignoring it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from typing import Any

import pytest
import trio

from tests.support.daemon_process import ROOT, Daemon, _drain, eventually, process_gone
from tests.support.wire_client import GOING_AWAY, RawClient, output_of, start_printing_pid


@pytest.mark.parametrize(
    "signum", [signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name
)
async def test_stop_signals_shut_down_gracefully(
    daemons: Any, connect: Any, signum: signal.Signals
) -> None:
    with trio.fail_after(20):
        daemon: Daemon = await daemons("--shutdown-grace", "10")
        client: RawClient = await connect(url=daemon.url)
        pid = await start_printing_pid(client, "p", "exec sleep 1000")
        polite = await start_printing_pid(
            client, "polite", "trap 'echo got-term; exit 0' TERM; sleep 1000 & wait"
        )
        daemon.process.send_signal(signum)
        assert await daemon.wait() == 0
        assert process_gone(pid) and process_gone(polite)
        for process_id, code in (("p", 128 + signal.SIGTERM), ("polite", 0)):
            events = client.notifications[process_id]
            exits = [m["params"]["exitCode"] for m in events if m["method"] == "process/exited"]
            assert exits == [code], (process_id, exits)
            assert events[-1]["method"] == "process/closed", process_id
        await eventually(lambda: client.ws.closed is not None)
        assert client.ws.closed is not None and client.ws.closed.code == GOING_AWAY
        assert f"received {signum.name}: stopping".encode() in daemon.stderr


async def test_sigusr1_logs_a_state_summary_and_sigusr2_is_ignored(
    daemons: Any, connect: Any
) -> None:
    with trio.fail_after(20):
        daemon: Daemon = await daemons()
        client: RawClient = await connect(url=daemon.url)
        pid = await start_printing_pid(client, "p", "exec sleep 1000")
        await start_printing_pid(client, "q", "echo hello")
        await client.wait_closed("q")
        detached: RawClient = await connect(url=daemon.url)
        await detached.ws.aclose()

        daemon.process.send_signal(signal.SIGUSR2)
        # The daemon answered after the signal was sent, so it has handled it.
        assert await client.call("environment/status") == {"status": "ready"}
        daemon.process.send_signal(signal.SIGUSR1)
        await eventually(lambda: b"state:" in daemon.stderr)
        line = next(line for line in daemon.stderr.decode().splitlines() if "state:" in line)
        assert re.search(r"2 sessions \(1 attached, 1 detached\)", line), line
        assert re.search(r"2 processes \(1 running, 1 closed\)", line), line
        # "<pid>\n" of p, "<pid>\nhello\n" of q: retained output.
        retained = len(f"{pid}\n") + len(output_of(client.notifications["q"]))
        assert f"{retained} bytes of output retained" in line, line
        assert "bytes queued for stdin" in line, line
        assert client.session_id is not None and client.session_id not in line

        daemon.process.send_signal(signal.SIGUSR2)
        assert await client.call("environment/status") == {"status": "ready"}
        assert daemon.process.returncode is None
        assert not process_gone(pid)


async def test_a_daemon_started_ignoring_sighup_keeps_ignoring_it(
    daemons: Any, connect: Any, nursery: trio.Nursery
) -> None:
    """``nohup exec-runtime serve``: SIGHUP is what the user asked to survive."""
    with trio.fail_after(20):
        # SIG_IGN survives exec: the daemon starts with SIGHUP ignored, as under nohup.
        script = (
            "import signal, sys, runpy; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
            "sys.argv = ['exec_runtime', 'serve']; runpy.run_module('exec_runtime', "
            "run_name='__main__')"
        )
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=dict(os.environ),
        )
        daemon = Daemon(process)
        assert process.stdout is not None and process.stderr is not None
        nursery.start_soon(_drain, process.stdout, daemon.stdout, daemon.stdout_closed)
        nursery.start_soon(_drain, process.stderr, daemon.stderr, trio.Event())
        try:
            await eventually(lambda: b"\n" in daemon.stdout or process.returncode is not None)
            client: RawClient = await connect(url=daemon.url)
            pid = await start_printing_pid(client, "p", "exec sleep 1000")
            process.send_signal(signal.SIGHUP)
            assert await client.call("environment/status") == {"status": "ready"}
            assert process.returncode is None and not process_gone(pid)
            # Its children still get the default SIGHUP: process/signal hangup works.
            await client.call("process/signal", {"processId": "p", "signal": "hangup"})
            events = await client.wait_closed("p")
            exits = [m["params"]["exitCode"] for m in events if m["method"] == "process/exited"]
            assert exits == [128 + signal.SIGHUP]
        finally:
            await daemon.kill()
