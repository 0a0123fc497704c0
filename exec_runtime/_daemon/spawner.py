"""Where children are spawned: threads that live as long as the process, each with a
descriptor table of its own.

Children used to be spawned by ``trio.lowlevel.open_process``, whose ``Popen`` runs in
one of trio's worker threads. Two things were wrong with that, both measured:

- **The forking thread is the child's parent, for the kernel's parent-death signal.**
  ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, and trio's
  worker threads exit after 10 s idle. bwrap's ``--die-with-parent`` sets it, so a
  sandboxed command was SIGKILLed 10.0 s after its start once its thread retired.
  These threads never exit.
- **A fork walks every descriptor the daemon holds.** It copies the forking thread's
  table, and the child then closes all of it but what it keeps: per spawn, two passes
  over every open descriptor (``/bin/true``: 0.5 ms with 6 open, 2.3-4.3 ms with
  16,000; a daemon running 2,700 processes holds about 16,000). Each thread here gives itself
  an empty table (``close_range(CLOSE_RANGE_UNSHARE)``: the kernel copies nothing) and
  takes only what the child needs from the daemon's (``pidfd_getfd``), so a spawn costs
  the same however many descriptors the daemon has open.

Where the kernel lacks either call (before Linux 5.9) or a seccomp filter refuses it,
the threads share the daemon's table: a spawn costs what it did, and is as correct.
The descriptors a child is given keep their numbers in it (``pass_fds``: bwrap's
``--seccomp FD``, Landlock's ruleset).

A thread with a table of its own must not touch any descriptor by a number it got from
the rest of the process, for that number means something else (or nothing) there. So:
it tells the waiting task that a spawn is done through an eventfd it copied in (not
``run_sync_soon``, which writes to trio's wake-up descriptor by number); what it may
drop last (the request) holds numbers, strings and a callable, nothing whose finaliser
closes a descriptor; the garbage collector is paused while it spawns, so a collection
cannot run some other object's finaliser in it; and it logs nothing once its table is
its own. Python's signal handler also writes to a wake-up descriptor by number, in
whichever thread the signal interrupts: the kernel gives a process-directed signal to
the main thread first unless that thread already has one pending, the daemon handles
only SIGINT, SIGTERM and the like (none for SIGCHLD), and outside a spawn this table
holds /dev/null on 0-2 and nothing else, so such a write could land only on a spawn's
own copies, in a window of well under a millisecond. We accept that.
"""

from __future__ import annotations

import collections
import ctypes
import fcntl
import gc
import logging
import os
import platform
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from typing import Final

import attrs
import outcome
import trio

log = logging.getLogger("exec_runtime.spawner")

THREADS: Final = 4
"""Spawn threads (started on the first spawn). A vfork holds its thread until the child
execs; more threads than cores barely spawn faster, and the daemon lets 16 starts at a
time through to here (``fds.START_SLOTS``)."""

_CLOSE_RANGE_UNSHARE: Final = 1 << 1
# The same numbers on every architecture that has them (the generic table, since 5.x).
_SYSCALLS: Final = {"close_range": 436, "pidfd_getfd": 438}
_ARCHES: Final = frozenset({"x86_64", "aarch64", "arm64"})

PIPE: Final = subprocess.PIPE
DEVNULL: Final = subprocess.DEVNULL


@attrs.frozen
class _Request:
    """What to spawn. It holds numbers, strings and the ``preexec`` callable, nothing
    that closes a descriptor when it is dropped: a spawn thread may drop it last."""

    args: Sequence[str]
    executable: str
    cwd: str
    env: dict[str, str]
    stdin: int
    """A descriptor in the daemon's table, or ``DEVNULL``; so are the two below."""
    stdout: int
    stderr: int
    pass_fds: tuple[int, ...]
    preexec: Callable[[], None] | None


@attrs.define
class _Job:
    request: _Request
    done_fd: int
    """An eventfd (or a pipe's write end) in the daemon's table: written once the
    spawn is done."""
    result: outcome.Outcome[subprocess.Popen[bytes]] | None = None


class _Syscalls:
    """``close_range`` and ``pidfd_getfd`` through libc's ``syscall`` (Python has neither
    with these flags)."""

    def __init__(self) -> None:
        self._syscall = ctypes.CDLL(None, use_errno=True).syscall
        self._syscall.restype = ctypes.c_long

    def _call(self, name: str, *args: int) -> int:
        result = int(self._syscall(ctypes.c_long(_SYSCALLS[name]), *map(ctypes.c_long, args)))
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{name}: {os.strerror(err)}")
        return result

    def pidfd_getfd(self, pidfd: int, fd: int) -> int:
        """A copy of ``fd`` of the process ``pidfd`` refers to (close-on-exec)."""
        return self._call("pidfd_getfd", pidfd, fd, 0)

    def unshare_empty_table(self) -> None:
        """Give the calling thread a descriptor table of its own, with nothing in it
        (the kernel copies none of the shared one)."""
        self._call("close_range", 0, 0xFFFF_FFFF, _CLOSE_RANGE_UNSHARE)


def _lean_syscalls() -> _Syscalls | None:
    """The calls a thread needs for a table of its own, if this kernel lets us use them.

    Run in the thread before it unshares: ``pidfd_getfd`` is tried on a descriptor of
    the shared table, so a refusal (seccomp, an old kernel) leaves the thread usable.
    """
    if not sys.platform.startswith("linux") or platform.machine() not in _ARCHES:
        return None
    try:
        calls = _Syscalls()
        me = os.pidfd_open(os.getpid())
    except (OSError, AttributeError):
        return None
    try:
        os.close(calls.pidfd_getfd(me, me))
    except OSError as exc:
        log.info("spawning with the daemon's descriptor table: pidfd_getfd: %s", exc)
        return None
    finally:
        os.close(me)
    return calls


class _GcPause:
    """The garbage collector off while any spawn thread spawns (process-wide, counted).

    Plain methods, not a context manager: entering must not allocate a tracked object
    (a generator, a ``with`` target), for an allocation is what starts a collection.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._reenable = False

    def enter(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._reenable = gc.isenabled()
                gc.disable()
            self._depth += 1

    def exit(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._reenable:
                gc.enable()

    def forget(self) -> None:
        """In a forked child: the spawns that paused it stayed behind in the parent
        (and so may the lock)."""
        self._lock = threading.Lock()
        if self._depth and self._reenable:
            gc.enable()
        self._depth = 0


_GC_PAUSE: Final = _GcPause()


class _Board:
    """Hands jobs to the spawn threads: to the one that has been idle the shortest time
    (its caches are warm, so one thread serves one-shots one after another, as trio's
    thread cache does; handing them round-robin to four cost ~0.1-0.2 ms each), else
    into a backlog that the first thread to finish takes from."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Slot] = []
        """A stack: the most recently idle last."""
        self._backlog: collections.deque[_Job] = collections.deque()

    def submit(self, job: _Job) -> None:
        with self._lock:
            if not self._idle:
                self._backlog.append(job)
                return
            slot = self._idle.pop()
        slot.job = job
        slot.wake.release()

    def next_job(self, slot: _Slot) -> _Job:
        """The thread of ``slot``'s next job (it waits for one)."""
        with self._lock:
            if self._backlog:
                return self._backlog.popleft()
            self._idle.append(slot)
        slot.wake.acquire()
        job, slot.job = slot.job, None
        assert job is not None
        return job


class _Slot:
    """One thread's place on the board."""

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()  # released when a job is put here
        self.job: _Job | None = None


class _SpawnThread(threading.Thread):
    def __init__(
        self, board: _Board, courier: queue.SimpleQueue[int], ready: threading.Event
    ) -> None:
        super().__init__(name="exec-runtime spawner", daemon=True)
        self._board = board
        self._slot = _Slot()
        self._courier = courier
        self._ready = ready
        self._calls: _Syscalls | None = None

    @property
    def lean(self) -> bool:
        """Spawns from a table of its own (else from the daemon's)."""
        return self._calls is not None

    def run(self) -> None:
        try:
            self._calls = _lean_syscalls()
            if self._calls is not None:
                try:
                    self._calls.unshare_empty_table()
                except OSError as exc:
                    log.info("spawning with the daemon's descriptor table: close_range: %s", exc)
                    self._calls = None
                else:
                    # 0-2 taken, so what is copied in never lands on a child's stdio
                    # number before Popen moves it there (CPython copes if it does).
                    with suppress(OSError):
                        for _ in range(3):
                            os.open(os.devnull, os.O_RDWR)
        finally:
            self._ready.set()
        while True:
            job = self._board.next_job(self._slot)
            _GC_PAUSE.enter()
            try:
                # Never let an error end the thread: its children would get their
                # parent-death signal. Nothing can be logged from here (see above).
                with suppress(BaseException):
                    self._run(job)
                del job
            finally:
                _GC_PAUSE.exit()

    def _run(self, job: _Job) -> None:
        if self._calls is None:
            try:
                job.result = outcome.capture(_popen, job.request, *_stdio(job.request))
            finally:
                _signal_done(job.done_fd)
            return
        owned: set[int] = set()
        """Numbers in this thread's table to close once the spawn is done, each once."""
        copies: dict[int, int] = {}
        try:
            self._take(job, copies, owned)
            stdin, stdout, stderr = (copies.get(fd, fd) for fd in _stdio(job.request))
            job.result = outcome.capture(_popen, job.request, stdin, stdout, stderr)
        except BaseException as exc:
            job.result = outcome.Error(exc)
        finally:
            # Everything else first: the waiting task runs as soon as it is told, and
            # this thread would then wait for the GIL to finish.
            done = copies.get(job.done_fd)
            for fd in owned - {done}:
                with suppress(OSError):
                    os.close(fd)
            if done is None:
                self._courier.put(job.done_fd)  # it writes in the daemon's table
            else:
                _signal_done(done)
                os.close(done)

    def _take(self, job: _Job, copies: dict[int, int], owned: set[int]) -> None:
        """Copy the job's descriptors from the daemon's table into this thread's, into
        ``copies`` (the daemon's number -> ours; the eventfd first): each of
        ``pass_fds`` at its own number, the others anywhere. Every number it opens here
        goes into ``owned``."""
        assert self._calls is not None
        request = job.request
        others = {*(fd for fd in _stdio(request) if fd >= 0), *request.pass_fds}
        me = os.pidfd_open(os.getpid())
        try:
            for fd in [job.done_fd, *sorted(others)]:
                copies[fd] = self._calls.pidfd_getfd(me, fd)
                owned.add(copies[fd])
        finally:
            os.close(me)
        if request.pass_fds:
            # Move every copy above the numbers pass_fds must have (only 0-2 stay
            # below), then put those in place: nothing can be in the way.
            floor = max(request.pass_fds) + 1
            for fd, copy in list(copies.items()):
                if copy < floor:
                    copies[fd] = fcntl.fcntl(copy, fcntl.F_DUPFD_CLOEXEC, floor)
                    owned.add(copies[fd])
                    owned.discard(copy)
                    os.close(copy)
            for fd in request.pass_fds:
                os.dup2(copies[fd], fd, inheritable=False)
                owned.add(fd)


def _stdio(request: _Request) -> tuple[int, int, int]:
    return request.stdin, request.stdout, request.stderr


def _signal_done(fd: int) -> None:
    with suppress(OSError):  # only a bug could make it fail; the waiter would hang
        os.write(fd, (1).to_bytes(8, sys.byteorder))


def _courier(done_fds: queue.SimpleQueue[int]) -> None:
    while True:
        _signal_done(done_fds.get())


def _popen(request: _Request, stdin: int, stdout: int, stderr: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(request.args),
        executable=request.executable,
        cwd=request.cwd,
        env=request.env,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        pass_fds=request.pass_fds,
        preexec_fn=request.preexec,
    )


class Spawner:
    """The process's spawn threads (one ``Spawner`` per process: threads are a
    process's, and so is the descriptor table they keep out of)."""

    def __init__(self, threads: int = THREADS) -> None:
        self._count = threads
        self._board = _Board()
        self._threads: list[_SpawnThread] = []
        self._lock = threading.Lock()
        self.spawned = 0
        """Spawns handed to the threads so far."""

    @property
    def lean(self) -> bool:
        """The threads spawn from tables of their own (known once one has spawned)."""
        return bool(self._threads) and all(t.lean for t in self._threads)

    def threads_alive(self) -> bool:
        """Every spawn thread started is still there (one that ended would have taken
        the children it spawned with it, through their parent-death signal)."""
        return all(t.is_alive() for t in self._threads)

    def thread_ids(self) -> list[int]:
        """The threads' kernel ids (``/proc/self/task/<id>``)."""
        return [t.native_id for t in self._threads if t.native_id is not None]

    def _start_threads(self) -> None:
        with self._lock:
            if self._threads:
                return
            # The courier shares the daemon's table: it signals a finished spawn for a
            # thread that could not copy the job's eventfd into its own table.
            courier: queue.SimpleQueue[int] = queue.SimpleQueue()
            threading.Thread(
                target=_courier, args=(courier,), name="exec-runtime spawn courier", daemon=True
            ).start()
            for _ in range(self._count):
                ready = threading.Event()
                thread = _SpawnThread(self._board, courier, ready)
                thread.start()
                ready.wait()
                self._threads.append(thread)

    @trio.lowlevel.enable_ki_protection
    async def popen(self, request: _Request) -> subprocess.Popen[bytes]:
        """Spawn in a spawn thread. Not cancellable while it runs (a spawn is short, and
        a child spawned for a cancelled caller must still be handed back to be killed),
        as ``trio.to_thread.run_sync`` by default. The request's descriptors must stay
        open until this returns: the thread copies them by number."""
        if not self._threads:
            self._start_threads()
        done_fd, done_read = _done_signal()
        job = _Job(request, done_fd)
        self._board.submit(job)
        self.spawned += 1
        try:
            with trio.CancelScope(shield=True):
                await trio.lowlevel.wait_readable(done_read)
        finally:
            trio.lowlevel.notify_closing(done_read)
            os.close(done_read)
            if done_fd != done_read:
                os.close(done_fd)
        assert job.result is not None
        return job.result.unwrap()

    def _forget_threads(self) -> None:
        """In a forked child: the threads stayed behind in the parent."""
        self._board = _Board()
        self._threads = []
        self._lock = threading.Lock()


def _done_signal() -> tuple[int, int]:
    """(write end, read end): one eventfd where there are eventfds."""
    if hasattr(os, "eventfd"):
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        return fd, fd
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    return write_end, read_end


SPAWNER: Final = Spawner()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=SPAWNER._forget_threads)
    os.register_at_fork(after_in_child=_GC_PAUSE.forget)


@trio.lowlevel.enable_ki_protection
async def open_process(
    args: Sequence[str],
    *,
    executable: str,
    cwd: str,
    env: dict[str, str],
    stdin: int,
    stdout: int,
    stderr: int,
    pass_fds: tuple[int, ...] = (),
    preexec_fn: Callable[[], None] | None = None,
) -> trio.Process:
    """``trio.lowlevel.open_process`` for the daemon's children, spawned by
    :data:`SPAWNER`, always in a new session. ``stdin``, ``stdout`` and ``stderr`` are
    ``PIPE``, ``DEVNULL`` or a descriptor; the pipes are made here, as trio makes them."""
    ends: list[trio.lowlevel.FdStream | None] = [None, None, None]
    child_fds = [stdin, stdout, stderr]
    with ExitStack() as always, ExitStack() as on_failure:
        for index, wanted in enumerate(child_fds):
            if wanted != PIPE:
                continue
            read_end, write_end = os.pipe()
            ours, theirs = (write_end, read_end) if index == 0 else (read_end, write_end)
            always.callback(os.close, theirs)
            try:
                end = trio.lowlevel.FdStream(ours)
            except BaseException:
                os.close(ours)
                raise
            on_failure.callback(end.close)
            ends[index] = end
            child_fds[index] = theirs
        stdin_fd, stdout_fd, stderr_fd = child_fds
        request = _Request(
            args, executable, cwd, env, stdin_fd, stdout_fd, stderr_fd, pass_fds, preexec_fn
        )
        popen = await SPAWNER.popen(request)
        on_failure.pop_all()
    stdin_end, stdout_end, stderr_end = ends
    process: trio.Process = trio.Process._create(popen, stdin_end, stdout_end, stderr_end)
    return process
