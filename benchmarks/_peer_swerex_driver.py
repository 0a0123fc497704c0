"""Drive a SWE-ReX server with its own client (runs in the SWE-ReX venv, not ours).

``python _peer_swerex_driver.py PORT TOKEN N TOTAL_BYTES`` prints one JSON line:
one-shot seconds (``/usr/bin/true`` via ``RemoteRuntime.execute``) and the time to get
TOTAL_BYTES of ``head -c`` output back.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from swerex.runtime.abstract import Command
from swerex.runtime.remote import RemoteRuntime

TRUE = "/usr/bin/true"


async def main(port: int, token: str, n: int, total: int) -> None:
    runtime = RemoteRuntime(host="http://127.0.0.1", port=port, auth_token=token, timeout=10)
    await runtime.wait_until_alive(timeout=60)
    for _ in range(5):
        await runtime.execute(Command(command=[TRUE]))
    one_shot = []
    for _ in range(n):
        start = time.perf_counter()
        response = await runtime.execute(Command(command=[TRUE]))
        one_shot.append(time.perf_counter() - start)
        assert response.exit_code == 0, response
    start = time.perf_counter()
    response = await runtime.execute(Command(command=["head", "-c", str(total), "/dev/zero"]))
    seconds = time.perf_counter() - start
    received = len(response.stdout)
    print(json.dumps({"one_shot_s": one_shot, "throughput_s": seconds, "received": received}))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
