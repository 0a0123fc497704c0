"""Child programs the tests run."""

from __future__ import annotations

import sys

PY = sys.executable


def writer_script(size: int) -> list[str]:
    code = (
        "import sys\n"
        "block = bytes(range(256)) * 4096\n"
        f"data = (block * ({size} // len(block) + 1))[:{size}]\n"
        "sys.stdout.buffer.write(data)\n"
    )
    return [PY, "-c", code]

