"""A process task that fails after its start was answered (a bug, an OS error nothing
handled) ends that process only, and the client is told: exit 137 and closed, pushed
and on every read, instead of a stream that never ends."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import exec_runtime
from exec_runtime import Closed, Exited, Output
from exec_runtime._daemon.child import ChildExited
from exec_runtime._daemon.sequencer import Sequencer


@pytest.fixture
def failing_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Recording an exit that follows output raises, as a bug would."""
    original = Sequencer._record

    def record(self: Sequencer, message: Any) -> Any:
        if isinstance(message, ChildExited) and self.sequence.last_seq >= 1:
            raise RuntimeError("injected failure in the sequencer")
        return original(self, message)

    monkeypatch.setattr(Sequencer, "_record", record)


@pytest.mark.usefixtures("failing_exit")
async def test_a_failed_process_task_ends_the_process_for_the_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(20):
        async with exec_runtime.open_local() as client:
            proc = await client.start(["sh", "-c", "echo before; sleep 0.01"])
            events = [event async for event in proc.events()]
            kinds = [type(event) for event in events]
            assert kinds[0] is Output and events[0].data == b"before\n"  # type: ignore[union-attr]
            assert kinds[-2:] == [Exited, Closed]
            exited = events[-2]
            assert isinstance(exited, Exited) and exited.exit_code == 137
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            # The session and the daemon go on.
            result = await client.run(["true"])
            assert result.returncode == 0
    assert "injected failure in the sequencer" in caplog.text
