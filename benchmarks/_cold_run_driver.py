"""A fresh host's first big commands: ``python -m benchmarks._cold_run_driver URL TOTAL ROUNDS``.

Opens one client (msgpack, ``tune_malloc()`` not applied: a library host as it comes),
runs ``head -c TOTAL /dev/zero`` with ``client.run`` ROUNDS times and prints one JSON
line: per run the seconds, MB/s, and this process's CPU seconds and minor page faults.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import trio

import exec_runtime


async def main(url: str, total: int, rounds: int) -> None:
    runs = []
    async with exec_runtime.open_client(url) as client:
        for _ in range(rounds):
            usage0 = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            done = await client.run(["head", "-c", str(total), "/dev/zero"])
            seconds = time.perf_counter() - start
            usage1 = resource.getrusage(resource.RUSAGE_SELF)
            if len(done.stdout) != total:
                raise RuntimeError(f"got {len(done.stdout)} of {total} bytes")
            del done
            runs.append(
                {
                    "seconds": seconds,
                    "mb_s": total / seconds / 1e6,
                    "client_cpu_s": (usage1.ru_utime + usage1.ru_stime)
                    - (usage0.ru_utime + usage0.ru_stime),
                    "client_minor_faults": usage1.ru_minflt - usage0.ru_minflt,
                }
            )
    print(json.dumps(runs), flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
