"""The raw trio-websocket ceiling's sender, run as its own process like our daemon.

``python benchmarks/_ws_ceiling_server.py TOTAL_BYTES MESSAGE_BYTES`` prints its URL,
then sends TOTAL_BYTES in binary messages of MESSAGE_BYTES to each client that connects
(with our daemon's 256 KiB receive buffer), and closes that connection.
"""

from __future__ import annotations

import sys

import trio
import trio_websocket


async def main(total: int, size: int) -> None:
    payload = bytes(size)

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        sent = 0
        while sent < total:
            chunk = payload if total - sent >= size else payload[: total - sent]
            await ws.send_message(chunk)
            sent += len(chunk)
        await ws.aclose()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trio_websocket.serve_websocket(
                handler,
                "127.0.0.1",
                0,
                ssl_context=None,
                receive_buffer_size=256 * 1024,
                task_status=task_status,
            )
        )
        print(f"ws://127.0.0.1:{server.port}", flush=True)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), int(sys.argv[2]))
