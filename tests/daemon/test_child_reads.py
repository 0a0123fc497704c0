"""How the child pump reads its pipes in one round (``_process._read_round``)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator

import pytest

from exec_runtime._daemon import child as _process
from exec_runtime._daemon.child import READ_SIZE, ChunkRead, StreamEnded, _read_round

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


@pytest.fixture
def pipes() -> Iterator[list[tuple[int, int]]]:
    made: list[tuple[int, int]] = []
    for _ in range(2):
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        made.append((read_end, write_end))
    yield made
    for read_end, write_end in made:
        for fd in (read_end, write_end):
            try:
                os.close(fd)
            except OSError:
                pass


def test_a_round_takes_what_is_waiting_stdout_first(pipes: list[tuple[int, int]]) -> None:
    (out_r, out_w), (err_r, err_w) = pipes
    try:
        fcntl.fcntl(out_w, F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pytest.skip("cannot grow a pipe to 1 MiB here")
    data = os.urandom(2 * READ_SIZE + 1000)
    os.write(out_w, data)
    os.write(err_w, b"oops")
    open_fds = [("stdout", out_r), ("stderr", err_r)]
    messages = _read_round(open_fds, 4 * READ_SIZE)
    assert [(m.stream, len(m.data)) for m in messages if isinstance(m, ChunkRead)] == [
        ("stdout", READ_SIZE),
        ("stdout", READ_SIZE),
        ("stdout", 1000),
        ("stderr", 4),
    ]
    assert b"".join(m.data for m in messages[:3] if isinstance(m, ChunkRead)) == data
    assert _read_round(open_fds, 4 * READ_SIZE) == []  # nothing waits now
    os.close(err_w)
    assert _read_round(open_fds, 4 * READ_SIZE) == [StreamEnded("stderr")]
    assert open_fds == [("stdout", out_r)]


def test_a_short_read_ends_that_streams_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short read emptied the pipe: reading on would race the writer, a syscall per
    few KiB. What it writes meanwhile is the next round's."""
    script = {
        1: [b"a" * READ_SIZE, b"b" * 10, b"c" * 10],  # full, then short: one more read
        2: [b"d" * 5, b"e" * 5],  # short at once: one read
    }
    calls: list[int] = []

    def scripted_read(fd: int) -> bytes | None:
        calls.append(fd)
        return script[fd].pop(0) if script[fd] else None

    monkeypatch.setattr(_process, "_read_nonblocking", scripted_read)
    open_fds = [("stdout", 1), ("stderr", 2)]
    first = _read_round(open_fds, 4 * READ_SIZE)
    assert first == [
        ChunkRead("stdout", b"a" * READ_SIZE),
        ChunkRead("stdout", b"b" * 10),
        ChunkRead("stderr", b"d" * 5),
    ]
    assert sorted(calls) == [1, 1, 2]
    assert _read_round(open_fds, 4 * READ_SIZE) == [
        ChunkRead("stdout", b"c" * 10),
        ChunkRead("stderr", b"e" * 5),
    ]


def test_output_behind_a_missed_read_is_read_again_so_stdout_goes_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``printf out; printf err >&2`` with stdout's read just before "out" landed: the
    round sees "err", so it reads stdout again and holds both, stdout first."""
    script: dict[int, list[bytes | None]] = {1: [None, b"out"], 2: [b"err"]}
    monkeypatch.setattr(_process, "_read_nonblocking", lambda fd: script[fd].pop(0))
    assert _read_round([("stdout", 1), ("stderr", 2)], 4 * READ_SIZE) == [
        ChunkRead("stdout", b"out"),
        ChunkRead("stderr", b"err"),
    ]


def test_a_round_stops_at_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = iter([b"x" * READ_SIZE] * 10)
    monkeypatch.setattr(_process, "_read_nonblocking", lambda fd: next(reads))
    messages = _read_round([("stdout", 1)], 2 * READ_SIZE)
    assert len(messages) == 2
