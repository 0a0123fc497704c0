"""Drive OpenSSH's sshd with asyncssh (runs in the asyncssh venv, not ours).

``python _peer_asyncssh_driver.py PORT KEY_FILE N TOTAL_BYTES`` prints one JSON line:
one-shot seconds (``conn.run('/usr/bin/true')``, one channel each on one connection) and
the time to read TOTAL_BYTES of ``head -c`` output from one channel.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
import time

import asyncssh

TRUE = "/usr/bin/true"


async def main(port: int, key: str, n: int, total: int) -> None:
    async with asyncssh.connect(
        "127.0.0.1", port=port, username=getpass.getuser(), client_keys=[key], known_hosts=None
    ) as conn:
        for _ in range(5):
            await conn.run(TRUE, check=True)
        one_shot = []
        for _ in range(n):
            start = time.perf_counter()
            await conn.run(TRUE, check=True)
            one_shot.append(time.perf_counter() - start)
        start = time.perf_counter()
        process = await conn.create_process(f"head -c {total} /dev/zero", encoding=None)
        received = 0
        while chunk := await process.stdout.read(1 << 20):
            received += len(chunk)
        await process.wait()
        seconds = time.perf_counter() - start
    print(json.dumps({"one_shot_s": one_shot, "throughput_s": seconds, "received": received}))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
