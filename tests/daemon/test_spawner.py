"""The spawn threads (``_daemon/spawner.py``): they outlive what they spawn, and each
spawns from a descriptor table of its own that holds only what the child needs."""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import exec_runtime
from exec_runtime import Sandbox
from exec_runtime._daemon import spawner
from exec_runtime._daemon.spawner import SPAWNER, open_process
from tests.daemon.test_sandbox import need
from tests.support.daemon_process import eventually


def thread_table(tid: int) -> set[int]:
    """The descriptor numbers open in thread ``tid``'s table."""
    return {int(name) for name in os.listdir(f"/proc/self/task/{tid}/fd")}


@contextmanager
def many_open_descriptors(pairs: int) -> Iterator[None]:
    fds: list[int] = []
    try:
        for _ in range(pairs):
            fds += os.pipe()
        yield
    finally:
        for fd in fds:
            os.close(fd)


async def echo_through(
    proc: exec_runtime.ProcessHandle, events: exec_runtime.ProcessEvents, line: bytes
) -> bytes:
    """Write ``line`` to ``cat`` and collect its output until the line is back."""
    await proc.write(line)
    seen = b""
    async for event in events:
        if isinstance(event, exec_runtime.Output):
            seen += event.data
            if line in seen:
                return seen
        elif isinstance(event, exec_runtime.Exited):
            raise AssertionError(f"cat exited ({event.exit_code}) before echoing {line!r}")
    raise AssertionError("no echo")


async def test_a_sandboxed_command_outlives_the_thread_that_spawned_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bwrap's --die-with-parent (PR_SET_PDEATHSIG) fires when the *thread* that forked
    it exits. Spawned from trio's worker threads, which retire after 10 s idle, a
    sandboxed command was SIGKILLed 10 s after its start (here: once trio's idle
    timeout, shortened, let every worker thread go)."""
    need("bwrap")
    monkeypatch.setattr(trio._core._thread_cache, "IDLE_TIMEOUT", 0.05)
    async with exec_runtime.open_local() as client:
        with trio.fail_after(30):
            proc = await client.start(["cat"], sandbox=Sandbox.read_only(), pipe_stdin=True)
            assert proc.sandbox_type == "linuxSeccomp"
            events = proc.events()
            assert b"first" in await echo_through(proc, events, b"first\n")
            # Every trio worker thread (the 10 s ones of earlier tests included) retires.
            await eventually(
                lambda: not any(t.name.startswith("Trio thread") for t in threading.enumerate())
            )
            assert b"still here" in await echo_through(proc, events, b"still here\n")
            await proc.close_stdin()
            assert await proc.wait() == 0


async def test_spawn_threads_hold_only_what_the_child_needs() -> None:
    """A fork copies the forking thread's descriptor table, and the child closes it
    all: two passes over every descriptor the daemon holds, per spawn. The spawn
    threads' own tables hold three /dev/null descriptors between spawns, however many
    the rest of the process has open."""
    if spawner._lean_syscalls() is None:
        pytest.skip("this kernel refuses close_range(CLOSE_RANGE_UNSHARE) or pidfd_getfd")
    with many_open_descriptors(500):
        async with exec_runtime.open_local() as client:
            spawned = SPAWNER.spawned
            with trio.fail_after(30):
                result = await client.run(["sh", "-c", "echo out; echo err >&2"])
            assert SPAWNER.spawned == spawned + 1
        assert (result.stdout, result.stderr) == (b"out\n", b"err\n")
        assert SPAWNER.lean
        assert SPAWNER.threads_alive()
        tids = SPAWNER.thread_ids()
        assert len(tids) == spawner.THREADS
        assert len(thread_table(threading.get_native_id())) > 1000
        for tid in tids:
            table = thread_table(tid)
            assert table == {0, 1, 2}, table
            assert all(os.readlink(f"/proc/self/task/{tid}/fd/{fd}") == "/dev/null" for fd in table)


@pytest.mark.parametrize("low", [False, True])
async def test_passed_descriptors_keep_their_numbers_in_the_child(low: bool) -> None:
    """bwrap reads its seccomp program from ``--seccomp FD`` and Landlock's preexec
    restricts with the ruleset's number: a descriptor given to the child has the number
    the daemon gave it, wherever the spawn thread's copies landed (``low``: numbers a
    spawn thread's own copies would take first)."""
    read_end, write_end = os.pipe()
    targets = [write_end] if low else [fcntl.fcntl(write_end, fcntl.F_DUPFD_CLOEXEC, 300)]
    if not low:
        os.close(write_end)
    extra_read, extra_write = os.pipe()
    targets.append(extra_write)
    script = "import os\n" + "".join(f"os.write({fd}, b'{fd}\\n')\n" for fd in targets)
    try:
        with trio.fail_after(30):
            process = await open_process(
                [sys.executable, "-c", script],
                executable=sys.executable,
                cwd="/",
                env={"PATH": os.defpath},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=tuple(targets),
            )
            assert await process.wait() == 0
        os.close(targets[0])
        os.close(extra_write)
        assert os.read(read_end, 100) == f"{targets[0]}\n".encode()
        assert os.read(extra_read, 100) == f"{extra_write}\n".encode()
        assert process.stdout is not None and process.stderr is not None
        await process.stdout.aclose()
        await process.stderr.aclose()
    finally:
        os.close(read_end)
        os.close(extra_read)
    assert SPAWNER.threads_alive()
    for tid in SPAWNER.thread_ids():
        assert thread_table(tid) == {0, 1, 2} or not SPAWNER.lean


@pytest.mark.parametrize(
    ("cwd", "executable", "code"),
    [
        ("/nonexistent-dir", "/bin/true", errno.ENOENT),
        ("/", "/nonexistent-program", errno.ENOENT),
        ("/", "not-executable", errno.EACCES),
    ],
)
async def test_a_failed_spawn_raises_its_error_and_leaves_nothing_open(
    cwd: str, executable: str, code: int, tmp_path: Path
) -> None:
    if executable == "not-executable":
        executable = str(tmp_path / executable)
        Path(executable).write_text("#!/bin/sh\n")  # noqa: ASYNC240 - a tiny local file
    gc.collect()  # earlier tests' processes close their pidfds when collected
    before = thread_table(threading.get_native_id())
    with trio.fail_after(30), pytest.raises(OSError) as caught:
        await open_process(
            [executable],
            executable=executable,
            cwd=cwd,
            env={},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    assert caught.value.errno == code
    assert thread_table(threading.get_native_id()) == before
    assert SPAWNER.threads_alive()
    if SPAWNER.lean:
        for tid in SPAWNER.thread_ids():
            assert thread_table(tid) == {0, 1, 2}


async def open_true() -> trio.Process:
    """``/bin/true`` through :func:`open_process`, with no pipes."""
    return await open_process(
        ["true"],
        executable="/bin/true",
        cwd="/",
        env={},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_a_spawn_is_not_cancelled_half_way() -> None:
    """A spawn already handed to a thread completes, and its process comes back to the
    cancelled caller to be reaped, as with ``trio.to_thread.run_sync``."""
    with trio.CancelScope() as scope:
        scope.cancel()
        process = await open_true()
    assert scope.cancelled_caught is False
    with trio.fail_after(30):
        assert await process.wait() == 0


def test_the_threads_are_forgotten_in_a_forked_child() -> None:
    """A fork keeps only the forking thread: the child starts its own spawn threads,
    and a pause of the collector by a spawn under way in the parent is not the child's."""
    spawner._GC_PAUSE.enter()  # as if a spawn thread were spawning at the fork
    try:
        pid = os.fork()
    except BaseException:
        spawner._GC_PAUSE.exit()
        raise
    if pid != 0:
        spawner._GC_PAUSE.exit()
    if pid == 0:  # pragma: no cover - the child
        ok = SPAWNER.thread_ids() == [] and gc.isenabled()

        async def spawn() -> int:
            return await (await open_true()).wait()

        ok = ok and trio.run(spawn) == 0
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


LOW_NUMBERS_SCRIPT = """
import os, subprocess, sys, trio
from exec_runtime._daemon.spawner import SPAWNER, open_process

async def spawn_writers():
    pipes = [os.pipe() for _ in range(6)]
    writes = tuple(w for _, w in pipes)
    code = "import os\\n" + "".join(f"os.write({w}, b'{w}')\\n" for w in writes)
    process = await open_process(
        [sys.executable, "-c", code], executable=sys.executable, cwd="/", env={},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        pass_fds=writes,
    )
    assert await process.wait() == 0
    for read_end, write_end in pipes:
        os.close(write_end)
        assert os.read(read_end, 100) == str(write_end).encode(), (read_end, write_end)
        os.close(read_end)
    for stream in (process.stdin, process.stdout, process.stderr):
        await stream.aclose()

async def main():
    with trio.fail_after(30):
        for _ in range(3):
            await spawn_writers()
    assert SPAWNER.lean
    assert SPAWNER.threads_alive(), "a spawn thread ended"
    for tid in SPAWNER.thread_ids():
        assert {int(n) for n in os.listdir(f"/proc/self/task/{tid}/fd")} == {0, 1, 2}

trio.run(main)
"""


def test_passed_descriptors_on_the_numbers_a_spawn_thread_takes_first() -> None:
    """In a process with few descriptors open, the numbers pass_fds have are the very
    numbers a spawn thread's own copies take first (4, 5, ...): each still ends up
    where the child expects it, every copy is closed once, and the threads live on.
    (A copy closed twice once raised in a thread and ended it, and bwrap, its child,
    got its parent-death SIGKILL: ``exec-runtime run --sandbox`` exited 137 one run in
    twenty.)"""
    if spawner._lean_syscalls() is None:
        pytest.skip("this kernel refuses close_range(CLOSE_RANGE_UNSHARE) or pidfd_getfd")
    done = subprocess.run(
        [sys.executable, "-c", LOW_NUMBERS_SCRIPT], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()


def request_for(
    argv: list[str], *, stdout: int = subprocess.DEVNULL, pass_fds: tuple[int, ...] = ()
) -> spawner._Request:
    return spawner._Request(
        argv, argv[0], "/", {"PATH": os.defpath}, subprocess.DEVNULL, stdout,
        subprocess.DEVNULL, pass_fds, None,
    )  # fmt: skip


async def test_threads_that_share_the_daemons_table_spawn_as_well(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the kernel refuses close_range(CLOSE_RANGE_UNSHARE) or pidfd_getfd (before
    Linux 5.9, or a seccomp filter), the threads spawn from the shared table."""
    monkeypatch.setattr(spawner, "_lean_syscalls", lambda: None)
    shared = spawner.Spawner(threads=2)
    read_end, write_end = os.pipe()
    high = fcntl.fcntl(write_end, fcntl.F_DUPFD_CLOEXEC, 300)
    os.close(write_end)
    try:
        with trio.fail_after(30):
            popen = await shared.popen(
                request_for([sys.executable, "-c", f"import os; os.write({high}, b'x')"],
                            pass_fds=(high,))
            )  # fmt: skip
            while popen.poll() is None:  # noqa: ASYNC110 - a plain Popen has no trio wait
                await trio.sleep(0.005)
        assert popen.returncode == 0
        os.close(high)
        assert os.read(read_end, 10) == b"x"
        with trio.fail_after(30), pytest.raises(FileNotFoundError):
            await shared.popen(request_for(["/nonexistent-program"]))
    finally:
        os.close(read_end)
    assert not shared.lean
    assert shared.threads_alive()
    for tid in shared.thread_ids():
        assert len(thread_table(tid)) > 3  # the daemon's table


async def test_a_descriptor_that_cannot_be_copied_fails_that_spawn_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A copy refused by the kernel fails the spawn with its error, leaves nothing in
    the thread's table, and ends no thread; if it is the job's eventfd that cannot be
    copied, the courier (in the daemon's table) still wakes the waiting task."""
    if spawner._lean_syscalls() is None:
        pytest.skip("this kernel refuses close_range(CLOSE_RANGE_UNSHARE) or pidfd_getfd")
    refused: set[int] = set()
    real = spawner._Syscalls.pidfd_getfd

    def pidfd_getfd(self: spawner._Syscalls, pidfd: int, fd: int) -> int:
        if fd in refused:
            raise OSError(errno.EMFILE, "refused by the test")
        return real(self, pidfd, fd)

    monkeypatch.setattr(spawner._Syscalls, "pidfd_getfd", pidfd_getfd)
    lean = spawner.Spawner(threads=1)
    read_end, write_end = os.pipe()
    try:
        with trio.fail_after(30):
            await lean.popen(request_for(["/bin/true"]))  # starts the thread
            refused.add(write_end)
            with pytest.raises(OSError) as caught:
                await lean.popen(request_for(["/bin/true"], stdout=write_end))
            assert caught.value.errno == errno.EMFILE
            # The next eventfd gets the lowest free number: refuse every low one.
            refused.update(range(3, 4096))
            with pytest.raises(OSError) as caught:
                await lean.popen(request_for(["/bin/true"]))
            assert caught.value.errno == errno.EMFILE
            refused.clear()
            popen = await lean.popen(request_for(["/bin/true"]))
        assert popen.wait(timeout=30) == 0
    finally:
        os.close(read_end)
        os.close(write_end)
    assert lean.lean
    assert lean.threads_alive()
    [tid] = lean.thread_ids()
    assert thread_table(tid) == {0, 1, 2}


async def test_the_collector_is_off_while_a_spawn_thread_spawns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A collection in a spawn thread would run other objects' finalisers there, which
    close descriptors by number, in the wrong table. Nested pauses (four threads) turn
    it back on only once the last ends, and only if it was on."""
    seen: list[bool] = []
    real = spawner._popen

    def popen(*args: Any) -> subprocess.Popen[bytes]:
        seen.append(gc.isenabled())
        return real(*args)

    monkeypatch.setattr(spawner, "_popen", popen)
    assert gc.isenabled()
    with trio.fail_after(30):
        child = await SPAWNER.popen(request_for(["/bin/true"]))
    assert child.wait(timeout=30) == 0
    assert seen == [False]
    assert gc.isenabled()
    pause = spawner._GcPause()
    pause.enter()
    pause.enter()
    pause.exit()
    assert not gc.isenabled()
    pause.exit()
    assert gc.isenabled()
    gc.disable()
    try:
        pause.enter()
        pause.exit()
        assert not gc.isenabled()
    finally:
        gc.enable()
