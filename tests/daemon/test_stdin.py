"""StdinWriter (PROTOCOL §4 process/write): recording the write id and queueing the
bytes is one atomic step, so a write cancelled while it waits for queue room has done
nothing, and its retry with the same id writes the bytes exactly once."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
import trio

from exec_runtime._daemon.stdin import INLINE_WRITE_BYTES, MAX_PENDING_BYTES, StdinWriter
from tests.support.wire_client import output_of


async def read_all(fd: int) -> bytes:
    chunks = []
    while True:
        await trio.lowlevel.wait_readable(fd)
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def fill(fd: int) -> bytes:
    """Fill a pipe (the child is not reading): a write now has to be queued."""
    os.set_blocking(fd, False)
    written = 0
    try:
        while True:
            written += os.write(fd, b"p" * 65536)
    except BlockingIOError:
        pass
    return b"p" * written


async def test_a_write_to_an_idle_writer_reaches_the_child_before_the_reply() -> None:
    """Nothing queued nor being written: the bytes are written before ``write``
    returns (the reply), without a hop to the writer task; what does not fit is queued."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    stream = trio.lowlevel.FdStream(write_fd)
    writer = StdinWriter(stream, eof_bytes=None)  # run() never runs
    with trio.fail_after(10):
        assert await writer.write("w1", b"x\n", close=False) == "accepted"
        assert os.read(read_fd, 100) == b"x\n"
        assert writer.pending_bytes == 0
        prefill = fill(write_fd)
        assert await writer.write("w2", b"y", close=False) == "accepted"
        assert writer.pending_bytes == 1  # the pipe is full: queued for run()
        await stream.aclose()
    os.close(read_fd)
    assert prefill


async def test_a_big_write_goes_through_the_writer_task_even_when_idle() -> None:
    """Up to ``INLINE_WRITE_BYTES`` is written inline; bulk input is not written in the
    request's handler (it measured slower there)."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    stream = trio.lowlevel.FdStream(write_fd)
    writer = StdinWriter(stream, eof_bytes=None)  # run() never runs
    with trio.fail_after(10):
        assert await writer.write("w0", b"y" * INLINE_WRITE_BYTES, close=False) == "accepted"
        assert os.read(read_fd, 2 * INLINE_WRITE_BYTES) == b"y" * INLINE_WRITE_BYTES  # inline
        assert await writer.write("w1", b"z" * (INLINE_WRITE_BYTES + 1), close=False) == (
            "accepted"
        )
        assert writer.pending_bytes == INLINE_WRITE_BYTES + 1
        with pytest.raises(BlockingIOError):
            os.read(read_fd, 100)
        assert await writer.write("w2", b"z" * INLINE_WRITE_BYTES, close=False) == "accepted"
        assert writer.pending_bytes == 2 * INLINE_WRITE_BYTES + 1  # queued behind w1
        await stream.aclose()
    os.close(read_fd)


async def test_a_cancelled_write_did_nothing_and_its_retry_writes_once() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    prefill = fill(write_fd)
    writer = StdinWriter(trio.lowlevel.FdStream(write_fd), eof_bytes=None)
    first = b"a" * MAX_PENDING_BYTES  # fills the queue: the pipe is not read yet
    second = b"b" * 1000
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            assert await writer.write("w1", first, close=False) == "accepted"
            with trio.move_on_after(0.1) as waiting:
                await writer.write("w2", second, close=False)  # no room: waits
            assert waiting.cancelled_caught
            received = []

            async def drain() -> None:
                received.append(await read_all(read_fd))

            nursery.start_soon(drain)
            assert await writer.write("w2", second, close=False) == "accepted"  # the retry
            assert await writer.write("w2", second, close=False) == "accepted"  # a duplicate
            assert await writer.write("c", b"", close=True) == "accepted"
        os.close(read_fd)
    assert received == [prefill + first + second]


async def test_close_stdin_on_a_pty_ends_input_after_a_partial_line(connect: Any) -> None:
    """``closeStdin`` on a terminal is a ^D, which ends input only at the start of a
    line: after ``abc`` without a newline the reader must still see EOF."""
    with trio.fail_after(10):
        client = await connect()
        await client.start("p", ["cat"], tty=True)
        chunk = base64.b64encode(b"abc").decode()
        write = {"processId": "p", "writeId": "w", "chunk": chunk}
        assert (await client.call("process/write", write))["status"] == "accepted"
        close = {"processId": "p", "writeId": "c", "closeStdin": True}
        assert (await client.call("process/write", close))["status"] == "accepted"
        events = await client.wait_closed("p")
        exited = [m for m in events if m["method"] == "process/exited"]
        assert exited[0]["params"]["exitCode"] == 0
        assert b"abc" in output_of(events, "pty")


async def test_queued_stdin_bytes_count_in_the_daemons_buffer_budget() -> None:
    """An empty queue takes one write of any size: those bytes stay charged to the
    budget until written to the child, and are given back when stdin closes, so one
    big write parked per process cannot grow the daemon outside every budget."""
    from exec_runtime._daemon.budget import Account, ByteBudget

    budget = ByteBudget(64 << 20, "buffers")
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    fill(write_fd)
    writer = StdinWriter(trio.lowlevel.FdStream(write_fd), eof_bytes=None, account=Account(budget))
    big = b"x" * (8 << 20)  # far more than the pipe holds: the child is not reading
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            assert await writer.write("w1", big, close=False) == "accepted"
            assert budget.used == len(big)  # queued, not written
            received = await read_some_then_close(read_fd, 1 << 20)
            assert received
            nursery.cancel_scope.cancel()  # the process ends with bytes still queued
    assert writer.pending_bytes == 0
    assert budget.used == 0


async def read_some_then_close(fd: int, size: int) -> bytes:
    await trio.lowlevel.wait_readable(fd)
    data = os.read(fd, size)
    os.close(fd)
    return data
