"""One connection's frames leave in the order they were produced, whichever path they
take: written directly by their producer when nothing is queued, or through the outbox
and the writer's batched writes (``Connection._send_frames``)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from exec_runtime import ServerConfig
from tests.support.wire_client import RawClient


# A tiny outbox: producers overflow into it and the writer batches, while others find
# it empty and write directly, so both paths interleave on one connection.
@pytest.mark.parametrize("server_config", [ServerConfig(outbox_frames=1)])
async def test_each_process_s_notifications_arrive_in_seq_order_on_the_wire(
    connect: Any,
) -> None:
    with trio.fail_after(60):
        client: RawClient = await connect()
        # Many separate chunks per process (a pause between lines), and bulk output.
        script = "for i in $(seq 150); do echo $i; sleep 0.001; done; head -c 3000000 /dev/zero"
        ids = [f"p{i}" for i in range(6)]
        async with trio.open_nursery() as nursery:
            for process_id in ids:
                nursery.start_soon(client.start, process_id, ["sh", "-c", script])
            # Requests and their responses interleave with the notifications.
            for _ in range(20):
                nursery.start_soon(client.call, "environment/status")
        for process_id in ids:
            await client.wait_closed(process_id)
    for process_id in ids:
        arrival = [m["params"]["seq"] for m in client.notifications[process_id]]
        assert arrival == sorted(arrival), f"{process_id}: seqs arrived as {arrival}"
        assert arrival == list(range(1, len(arrival) + 1))
    assert not client.notifications["__unmatched__"]
