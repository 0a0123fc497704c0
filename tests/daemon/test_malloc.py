"""``tune_malloc``: the opt-in allocator settings. Run in a fresh interpreter, since
they are process-wide and cannot be undone."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

SCRIPT = """
import resource, exec_runtime
print(exec_runtime.tune_malloc())
# Churn like a stream: a big buffer made, filled and dropped, over and over.
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    chunk = bytearray(b"x" * 262144)
    del chunk
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_tuned_processes_reuse_big_buffers_without_faulting_them_in() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert out[0] == "True"
    # 200 buffers of 64 pages each: untuned glibc may map and fault every one
    # (12,800 faults); tuned, they come from the kept heap.
    assert int(out[1]) < 200, out
