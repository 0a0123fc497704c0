"""``serve --listen stdio`` (PROTOCOL §1: one JSON message per line) fed from a pipe
that ends right after the requests, as a script would feed it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import trio
import trio.testing

from exec_runtime._wire.transport import StreamLineTransport, TransportClosed

HANDSHAKE = (
    b'{"id":1,"method":"initialize","params":{"clientName":"t"}}\n{"method":"initialized"}\n'
)


async def serve_stdio(stdin: bytes, *args: str) -> list[dict[str, object]]:
    argv = [sys.executable, "-m", "exec_runtime", "serve", "--listen", "stdio", *args]
    result = await trio.run_process(argv, stdin=stdin, capture_stdout=True, capture_stderr=True)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


async def test_requests_sent_just_before_the_end_of_input_are_answered() -> None:
    """EOF on stdin ends the input, not the output: every request before it, the last
    line without its newline too, gets its reply before the daemon exits."""
    requests = (
        b'{"id":2,"method":"process/start","params":{"processId":"p","argv":["true"],'
        b'"cwd":"file:///","env":{},"tty":false}}\n'
        b'{"id":3,"method":"fs/readFile","params":{"path":"file:///etc/hostname"}}\n'
        b'{"id":4,"method":"environment/status"}'
    )
    with trio.fail_after(30):
        replies = await serve_stdio(HANDSHAKE + requests)
    answered = {m["id"]: m for m in replies if "id" in m}
    assert set(answered) == {1, 2, 3, 4}
    assert answered[2]["result"] == {"processId": "p", "sandboxType": "none"}
    assert "dataBase64" in answered[3]["result"]  # type: ignore[operator]
    assert answered[4]["result"] == {"status": "ready"}


@pytest.mark.parametrize("newline", [b"\n", b""])
async def test_a_line_over_the_message_limit_ends_the_connection(newline: bytes) -> None:
    """Like a WebSocket message over the limit (PROTOCOL §1): whether the line came
    whole, with its newline, or is still unfinished."""
    send, receive = trio.testing.memory_stream_one_way_pair()
    transport = StreamLineTransport(receive, trio.testing.MemorySendStream(), max_line=1000)
    with trio.fail_after(5):
        await send.send_all(b'{"id":1}\n' + b"a" * 3000 + newline + b'{"id":2}\n')
        assert await transport.receive_message() == b'{"id":1}'
        with pytest.raises(TransportClosed, match="exceeds the message size limit"):
            await transport.receive_message()


async def test_blank_lines_are_skipped_and_crlf_is_one_line_end() -> None:
    send, receive = trio.testing.memory_stream_one_way_pair()
    transport = StreamLineTransport(receive, trio.testing.MemorySendStream())
    with trio.fail_after(5):
        await send.send_all(b'\n  \r\n{"id":1}\r\n\n{"id":2}\n')
        assert await transport.receive_message() == b'{"id":1}'
        assert await transport.receive_message() == b'{"id":2}'


class BrokenStream(trio.abc.HalfCloseableStream):
    """A pipe whose reader went away (EPIPE) or a terminal that hung up (EIO)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        raise self.error

    async def wait_send_all_might_not_block(self) -> None:
        raise self.error

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        raise self.error

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize(
    "error",
    [
        BrokenPipeError(32, "Broken pipe"),
        OSError(5, "Input/output error"),
        trio.BrokenResourceError(),
    ],
)
async def test_a_broken_stdin_or_stdout_is_a_closed_transport(error: BaseException) -> None:
    """The connection sees TransportClosed (a client gone), never the OS error: the
    session detaches as it would for a dropped WebSocket."""
    transport = StreamLineTransport(BrokenStream(error), BrokenStream(error))
    with trio.fail_after(5):
        with pytest.raises(TransportClosed):
            await transport.send_message(b'{"id":1}')
        with pytest.raises(TransportClosed):
            await transport.receive_message()


async def test_serve_stdio_exits_cleanly_when_its_reader_goes_away() -> None:
    """A host that closes the daemon's stdout (EPIPE on the next reply), then its stdin:
    the daemon exits 0 without a traceback."""
    argv = [sys.executable, "-m", "exec_runtime", "serve", "--listen", "stdio"]
    with trio.fail_after(30):
        proc = await trio.lowlevel.open_process(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdin and proc.stdout and proc.stderr
        try:
            await proc.stdin.send_all(HANDSHAKE)
            first = await proc.stdout.receive_some()
            assert b'"sessionId"' in first
            await proc.stdout.aclose()  # the reader goes away
            await proc.stdin.send_all(b'{"id":2,"method":"environment/status"}\n')
            await proc.stdin.aclose()
            stderr = bytearray()
            while chunk := await proc.stderr.receive_some():
                stderr += chunk
            assert await proc.wait() == 0, stderr.decode()
            assert b"Traceback" not in stderr, stderr.decode()
        finally:
            proc.kill()
            await proc.wait()
