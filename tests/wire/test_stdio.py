"""``serve --listen stdio`` (PROTOCOL §1: one JSON message per line) fed from a pipe
that ends right after the requests, as a script would feed it."""

from __future__ import annotations

import json
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
