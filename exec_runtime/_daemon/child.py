"""One supervised child: spawn (pipes or PTY, own process group), pump its output, wait.

The child task turns OS events into :data:`ChildMessage` values on a memory channel.
It never assigns sequence numbers: that is the sequencer's job (``_daemon/sequencer.py``).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import shutil
import signal
import struct
import subprocess
import termios
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from functools import partial
from typing import TYPE_CHECKING, Final, Protocol

import attrs
import trio

from .._core.events import StreamName
from .budget import Account
from .orphans import WATCHDOG
from .reaper import kill_sessions, session_members
from .spawner import open_process

log = logging.getLogger("exec_runtime.process")

if TYPE_CHECKING:
    import outcome

    from .sandbox import LaunchPieces

READ_SIZE: Final = 256 * 1024
PIPE_SIZE: Final = 256 * 1024
"""Output pipes are grown from Linux's 64 KiB so a fast child fills bigger chunks:
4x fewer messages per MB (measured: the per-message cost dominates throughput)."""
DEFAULT_TTY_SIZE: Final = (24, 80)


class Launcher(Protocol):
    """Confines a spawn (``_sandbox.BoundLaunch``): pieces to add, valid while open."""

    def pieces(self, argv0: str, cwd: str) -> AbstractContextManager[LaunchPieces]: ...


@attrs.frozen
class SpawnSpec:
    argv: Sequence[str]
    cwd: str
    env: dict[str, str]
    tty: bool = False
    pipe_stdin: bool = False
    arg0: str | None = None
    tty_size: tuple[int, int] = DEFAULT_TTY_SIZE
    watch_orphans: bool = True
    """Register the group with the orphan watchdog (``_daemon/orphans.py``)."""
    launcher: Launcher | None = None
    """The sandbox that confines the command (PROTOCOL §11), or None."""
    exit_grace: float = 0.0
    """After the exit, wait this long for output still in flight before reporting it
    (a sandboxed command's verdict needs its last words, PROTOCOL §11)."""

    @property
    def sandboxed(self) -> bool:
        return self.launcher is not None


@attrs.frozen
class ChunkRead:
    stream: StreamName
    data: bytes


@attrs.frozen
class StreamEnded:
    stream: StreamName


@attrs.frozen
class ChildExited:
    exit_code: int


ChildMessage = ChunkRead | StreamEnded | ChildExited


def exit_code_of(returncode: int) -> int:
    """The OS exit code, or 128+N for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def resolve_executable(program: str, env_path: str | None) -> str:
    """``argv[0]`` looked up on ``env_path`` (the daemon's PATH), as a shell would."""
    if "/" in program:
        return program
    found = shutil.which(program, path=env_path)
    if found is None:
        raise FileNotFoundError(errno.ENOENT, f"No such file or directory: {program!r}")
    return found


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _become_terminal_leader() -> None:  # pragma: no cover - runs in the child
    # After setsid (start_new_session), make the PTY on fd 0 our controlling terminal,
    # so job control and SIGWINCH on resize reach the foreground process group.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Child:
    """A spawned process and the OS resources attached to it."""

    def __init__(
        self,
        process: trio.Process,
        outputs: list[tuple[StreamName, trio.lowlevel.FdStream]],
        stdin: trio.abc.SendStream | None,
        pty_master: int | None,
        exit_grace: float = 0.0,
    ) -> None:
        self.process = process
        self.exit_grace = exit_grace
        self.pid = process.pid
        self.outputs = outputs
        self.stdin = stdin
        self.pty_master = pty_master
        self.tty = pty_master is not None
        """Runs in a PTY, as the leader of its own session (``_spawn_pty``)."""
        self.returncode: int | None = None
        self.watched = False
        """Registered with the orphan watchdog until released."""
        self.wakeup: _Wakeup | None = None
        self.release: Callable[[], None] | None = None
        """The launcher's clean-up, once the process is reaped (sandbox guards)."""
        self.in_flight = Account(None)
        """Output read and not yet delivered, charged to the daemon's output budget
        (the sequencer releases it once published): past the budget the pump stops
        reading, so the child blocks on its full pipe."""
        self._swept: trio.Event | None = None
        """Set once the last sweep of a tty's session asked for by ``kill`` is done."""
        """Its descriptors are taken by ``spawn``, so running out fails the start."""
        self._closed = False
        self._outputs_done = False
        """Every output reached EOF (the pump saw it) or we closed our ends (aclose)."""

    @property
    def streams(self) -> tuple[StreamName, ...]:
        return tuple(name for name, _ in self.outputs)

    @property
    def group_released(self) -> bool:
        """The leader is reaped and none of its outputs is open to us any more.

        Nothing then shows that the group still exists: once it is empty the kernel
        may give its id to an unrelated process group (pids are recycled). While an
        output is open, whoever holds its write end (the leader, or a grandchild in
        the group) keeps the group id from being reused. The pump sees this moment
        before the sequencer records the exit and the EOFs, which may lag behind
        (backpressure), so the managed process's ``closed`` can come later.
        """
        return self._outputs_done and self.process.returncode is not None

    @property
    def id_recycled(self) -> bool:
        """The leader is reaped, yet a process has its pid: the kernel gave the id away,
        so the group and session of that id are someone else's now.

        An open output does not keep the id reserved when its holder left the group
        (a grandchild that called ``setsid``): the group can be empty. The kernel
        reuses a pid only once no group or session has it as id, and a new process
        joins a group of that id only by creating it, as its leader, with that pid.
        """
        if self.process.returncode is None:
            return False  # unreaped: the pid (so the group id) is still ours
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # exists, and not even ours to signal
        return True

    @property
    def _group_ours(self) -> bool:
        """Signals to the child's group (and session) may go out: see above."""
        return not self.group_released and not self.id_recycled

    def signal_group(self, signum: int) -> bool:
        """Send ``signum`` to the child's process group. False if the group is gone
        or may be (``group_released``) or its id was recycled: then nothing is sent."""
        return self._group_ours and self._killpg(signum)

    def _killpg(self, signum: int) -> bool:
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    async def send_signal(self, signum: int) -> bool:
        """``process/signal``: ``signum`` to the child's group (PROTOCOL §4) and, for a
        tty, to the terminal's foreground process group when that is another one: what
        Ctrl-C means at a terminal. Under an interactive shell the foreground job has a
        group of its own, which the leader's group does not reach.

        False if nothing was sent; nothing is, once the group is released."""
        if not self._group_ours:
            return False
        sent = self._killpg(signum)
        foreground = await self._foreground_group()
        if foreground is not None and self._group_ours:
            try:
                os.killpg(foreground, signum)
                sent = True
            except ProcessLookupError:
                pass
        return sent

    def kill(self) -> bool:
        """SIGKILL the child's group and, for a tty, every process of its session.

        A tty child is a session leader, and an interactive shell in it puts each job
        in a group of its own: a background job would survive a kill of the leader's
        group, keep the PTY open (so the process never closes) and outlive the session.
        Its processes are found by their session id (the child's pid) in /proc, by a
        worker thread (``_SessionSweeper``): the scan reads every process on the host,
        which must not stall the event loop. The exit is reported (so the process
        closes) only once that sweep is done, and ``aclose`` waits for it too.

        Nothing is sent once the group is released (``group_released``) or its id
        recycled (``id_recycled``). Before, the leader is unreaped (its pid is taken)
        or an output is open: the PTY's holder is a process of the session (which
        keeps the session id from being reused) unless it left the session itself,
        and then a recycled id shows. The sweep follows within one scan of /proc: for
        the session id to be recycled by then, every process of the session would have
        to die and the host to go through all its pids (``pid_max``) meanwhile.
        False if nothing was sent to the leader's group.
        """
        if not self._group_ours:
            return False
        killed = self._killpg(signal.SIGKILL)
        if self.tty:
            self._swept = _sweeper().request(self.pid)
        return killed

    async def _foreground_group(self) -> int | None:
        """The PTY's foreground process group, if it is not the leader's group and is
        one of the child's session."""
        if self.pty_master is None:
            return None
        try:
            foreground = os.tcgetpgrp(self.pty_master)
        except OSError:
            return None
        if foreground <= 0 or foreground == self.pid:
            return None  # none (the session leader exited), or the leader's group
        # The terminal keeps the id of a foreground group that has emptied until the
        # shell takes the terminal back, and an id that is free may be recycled: send
        # only to a group that has a member in the child's session. If the process
        # ``foreground`` lives in the session, the group is one of the session (a
        # group is made by its leader, and a process leads no group of another
        # session); if that leader exited (``true | sleep 9``), look for a member:
        # a scan of /proc, in a worker thread (it grows with the host's processes).
        try:
            if os.getsid(foreground) == self.pid:
                return foreground
        except ProcessLookupError:
            pass
        members = await trio.to_thread.run_sync(session_members, self.pid)
        if any(pgrp == foreground for _, pgrp in members):
            return foreground
        return None

    def resize(self, rows: int, cols: int) -> None:
        if self.pty_master is None:
            raise ValueError("not a terminal")
        set_winsize(self.pty_master, rows, cols)

    async def run(self, send: trio.MemorySendChannel[list[ChildMessage]]) -> None:
        """Pump every output and wait for the exit; on cancel, kill the group and reap.

        Owns ``send``: the receiver sees EndOfChannel only after the exit and every EOF
        were delivered.
        """
        try:
            async with send:
                await self._pump(send)
        except BaseException:
            # Cancelled (session ended) or failed: kill the whole group (the session,
            # for a tty), including a grandchild that outlived the leader and still
            # holds a pipe.
            self.kill()
            raise
        finally:
            with trio.CancelScope(shield=True):
                await self.aclose()

    async def _pump(self, send: trio.MemorySendChannel[list[ChildMessage]]) -> None:
        """One task reads every output and watches the exit, so their order is decided
        in one place (PROTOCOL §5):

        - output the leader wrote before it exited precedes its exit: once the exit is
          seen, the pipes are drained (they hold all of it by then) before
          ``ChildExited`` is sent;
        - output that was waiting on both streams at once goes out stdout first, so
          ``printf out; printf err >&2`` always yields stdout, then stderr.

        What one round observed travels as one list (one channel hop, not one per
        chunk, EOF and exit). Sending awaits the bounded channel, and nothing is read
        meanwhile: a slow consumer lets the child's pipe fill (backpressure).
        """
        open_fds = [(name, stream.fileno()) for name, stream in self.outputs]
        exited = False
        with self.wakeup or _Wakeup(self.process) as wakeup:
            while open_fds or not exited:
                batch = await self._read_round(open_fds, ROUND_BYTES)
                self._outputs_done |= not open_fds
                progressed = bool(batch)
                if not exited and self.process.poll() is not None:
                    # Drain what the leader left in the pipes (bounded: a grandchild may
                    # keep writing), then record the exit.
                    drained = 0
                    while drained < DRAIN_BYTES:
                        if _bytes_in(batch) >= ROUND_BYTES:
                            await send.send(batch)
                            batch = []
                        more = await self._read_round(open_fds, DRAIN_BYTES - drained)
                        self._outputs_done |= not open_fds
                        if not more:
                            break
                        drained += _bytes_in(more) + 1
                        batch += more
                    if self.exit_grace and open_fds:
                        batch = await self._await_last_output(send, open_fds, batch, wakeup)
                    assert self.process.returncode is not None
                    self.returncode = self.process.returncode
                    if self._swept is not None:
                        await self._swept.wait()  # killed: its whole session first
                    self._release_launcher()  # before the exit is reported, not after
                    batch.append(ChildExited(exit_code_of(self.returncode)))
                    exited = progressed = True
                if batch:
                    await send.send(batch)
                if not progressed:
                    await wakeup.wait([fd for _, fd in open_fds], watch_exit=not exited)

    async def _await_last_output(
        self,
        send: trio.MemorySendChannel[list[ChildMessage]],
        open_fds: list[tuple[StreamName, int]],
        batch: list[ChildMessage],
        wakeup: _Wakeup,
    ) -> list[ChildMessage]:
        """Up to ``exit_grace``, read what still arrives before the exit is reported."""
        deadline = trio.current_time() + self.exit_grace
        while open_fds and trio.current_time() < deadline:
            with trio.move_on_at(deadline):
                await wakeup.wait([fd for _, fd in open_fds], watch_exit=False)
            if _bytes_in(batch) >= ROUND_BYTES:
                await send.send(batch)
                batch = []
            batch += await self._read_round(open_fds, ROUND_BYTES)
            self._outputs_done |= not open_fds
        return batch

    async def _read_round(
        self, open_fds: list[tuple[StreamName, int]], budget: int
    ) -> list[ChildMessage]:
        """``_read_round``, once the daemon's output budget has room: the check, the
        read and the charge happen with no await between, so the budget is overrun by
        at most one round at a time."""
        if open_fds:
            await self.in_flight.wait_room()
        batch = _read_round(open_fds, budget)
        self.in_flight.charge(_bytes_in(batch))
        return batch

    async def kill_and_reap(self) -> None:
        self.kill()
        with trio.CancelScope(shield=True):
            self.returncode = await self.process.wait()

    async def aclose(self) -> None:
        """Kill the group (the session, for a tty) if the leader still runs, reap it,
        release every fd.

        Idempotent: the pump and the process's owner both call it on their way out.
        """
        if self.process.returncode is None:
            await self.kill_and_reap()
        if self._swept is not None:
            with trio.CancelScope(shield=True):
                await self._swept.wait()  # nothing of the session outlives the close
        if self._closed:
            return
        self._closed = True
        for _, stream in self.outputs:
            stream.close()  # FdStream.close: synchronous, wakes any waiter on the fd
        self._outputs_done = True  # and the leader is reaped: the group is released
        if self.watched:
            WATCHDOG.unregister(self.pid)
            self.watched = False
        if self.stdin is not None:
            await self.stdin.aclose()
        if self.pty_master is not None:
            os.close(self.pty_master)
            self.pty_master = None
        if self.wakeup is not None:
            self.wakeup.close()
        self._release_launcher()

    def _release_launcher(self) -> None:
        """The launcher's clean-up, once: when the exit is seen (so a client that saw
        the exit sees the clean-up done), or when the child is closed without it."""
        if self.release is not None:
            release, self.release = self.release, None
            release()


ROUND_BYTES: Final = 4 * READ_SIZE
"""At most this much is read from all streams before it is sent on (stdout first)."""
DRAIN_BYTES: Final = 4 << 20
"""After the exit, at most this much more is read before the exit is recorded: more than
the leader can have left in its pipes (64 KiB each by default, 1 MiB at most)."""


def _read_nonblocking(fd: int) -> bytes | None:
    """Some bytes; ``b""`` at EOF; None when nothing is there yet."""
    try:
        return os.read(fd, READ_SIZE)
    except BlockingIOError:
        return None
    except OSError:
        # A PTY master reads EIO once every slave fd is closed: that is its EOF.
        return b""


def _read_round(open_fds: list[tuple[StreamName, int]], budget: int) -> list[ChildMessage]:
    """Read what is ready on every open stream (up to ``budget`` bytes): the chunks,
    stdout first, then the EOFs seen. Removes ended streams from ``open_fds``.

    Each pass reads the streams in order. A stream is read again in the next pass
    only

    - while its reads come back full: a short read emptied the pipe, and reading on
      would race the child (a child writing 4 KiB at a time on another core kept a
      read loop busy for some 60 reads of 12 KiB per round); what it writes meanwhile
      waits for the next round, which reads it in one go;
    - or if it had nothing while a stream after it had output: that output may have
      been written after output this stream's read just missed (``printf out; printf
      err >&2``), and the round must hold both to put stdout first (PROTOCOL §5).

    An empty list means nothing was ready.
    """
    read: dict[StreamName, list[bytes]] = {name: [] for name, _ in open_fds}
    ended: list[StreamName] = []
    draining = list(open_fds)
    total = 0
    while draining and total < budget:
        again: set[StreamName] = set()
        missed: list[StreamName] = []  # had nothing, so far in this pass
        for name, fd in draining:
            data = _read_nonblocking(fd)
            if data is None:
                missed.append(name)
                continue
            if not data:
                ended.append(name)
                continue
            read[name].append(data)
            total += len(data)
            again.update(missed)
            missed = []
            if len(data) == READ_SIZE:
                again.add(name)
        draining = [(name, fd) for name, fd in open_fds if name in again]
    messages: list[ChildMessage] = []
    for name, _ in open_fds:
        messages += [ChunkRead(name, chunk) for chunk in read[name]]
    for name in ended:
        open_fds[:] = [(n, fd) for n, fd in open_fds if n != name]
        messages.append(StreamEnded(name))
    return messages


def _bytes_in(messages: list[ChildMessage]) -> int:
    return sum(len(m.data) for m in messages if isinstance(m, ChunkRead))


class _Wakeup:
    """Waits until one of the child's output fds is readable or its leader exited.

    On Linux one epoll fd holds the pipes and a pidfd, so the pump waits with a single
    ``wait_readable``: the portable way (a task per fd and one for the exit, in a fresh
    nursery per wait) costs several task spawns per wait, which showed up as a large
    part of a one-shot command's latency.
    """

    def __init__(self, process: trio.Process) -> None:
        self._process = process
        self._epoll: select.epoll | None = None
        self._pidfd = -1
        self._registered: set[int] = set()
        if hasattr(select, "epoll") and hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(process.pid)
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    raise  # the start fails (-32603), not the pump later
                return  # e.g. an old kernel: the portable way
            try:
                self._epoll = select.epoll()
            except BaseException:
                os.close(self._pidfd)
                raise

    def __enter__(self) -> _Wakeup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the epoll and the pidfd; idempotent."""
        if self._epoll is not None:
            trio.lowlevel.notify_closing(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None
            os.close(self._pidfd)

    async def wait(self, fds: list[int], *, watch_exit: bool) -> None:
        if self._epoll is None:
            await _wait_any(fds, self._process if watch_exit else None)
            return
        # Level-triggered: a pipe at EOF and an exited pidfd stay ready, so whatever
        # the pump stopped watching leaves the set before the wait.
        wanted = set(fds)
        if watch_exit:
            wanted.add(self._pidfd)
        for fd in self._registered - wanted:
            self._epoll.unregister(fd)
        for fd in wanted - self._registered:
            self._epoll.register(fd, select.EPOLLIN)
        self._registered = wanted
        await trio.lowlevel.wait_readable(self._epoll.fileno())


async def _wait_any(fds: list[int], process: trio.Process | None) -> None:
    """Until one of ``fds`` is readable or ``process`` (if given) exits."""
    async with trio.open_nursery() as nursery:

        async def readable(fd: int) -> None:
            await trio.lowlevel.wait_readable(fd)
            nursery.cancel_scope.cancel()

        async def exit_of(process: trio.Process) -> None:
            await process.wait()
            nursery.cancel_scope.cancel()

        for fd in fds:
            nursery.start_soon(readable, fd)
        if process is not None:
            nursery.start_soon(exit_of, process)


async def spawn(spec: SpawnSpec) -> Child:
    """Start the child in a new session (so a new process group). Raises OSError."""
    # PROTOCOL §4: argv[0] is resolved on the daemon's PATH, not on the child's env.
    executable = resolve_executable(spec.argv[0], os.environ.get("PATH", os.defpath))
    args = [spec.arg0 if spec.arg0 is not None else spec.argv[0], *spec.argv[1:]]
    spawner = _spawn_pty if spec.tty else _spawn_pipes
    if spec.launcher is None:
        child = await spawner(spec, executable, args, (), None)
    else:
        _check_executable(executable)  # as the unconfined spawn would fail: -32603
        with spec.launcher.pieces(args[0], spec.cwd) as pieces:
            if pieces.prefix:  # the launcher (bwrap) runs the command
                args = [*pieces.prefix, _launcher_command(spec, executable), *args[1:]]
                executable = pieces.prefix[0]
            child = await spawner(spec, executable, args, pieces.pass_fds, pieces.preexec)
            child.release = pieces.release
    try:
        child.wakeup = _Wakeup(child.process)
    except BaseException:
        # Out of descriptors (EMFILE) with the child running: kill and reap it, and
        # close what it holds, so the start fails and leaves nothing behind.
        await child.aclose()
        raise
    if spec.watch_orphans:
        WATCHDOG.register(child.pid, child.tty)
        child.watched = True
    return child


class _SessionSweeper:
    """Kills the processes of tty sessions off the event loop, in a worker thread.

    Finding them scans /proc, one read per process on the host: done on the event loop
    for each kill, terminating a thousand tty processes stalled every connection for
    seconds. Sessions asked for while a sweep runs wait for the next one, which takes
    them all in one scan (``kill_sessions``). One per Trio run.
    """

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._pending: dict[int, trio.Event] = {}
        self._sweeping: dict[int, trio.Event] | None = None

    def request(self, session: int) -> trio.Event:
        """Sweep ``session`` (again, if a sweep of it is under way: it may have forked
        since); the event is set once that is done."""
        done = self._pending.setdefault(session, trio.Event())
        if self._sweeping is None:
            self._start()
        return done

    def _start(self) -> None:
        self._sweeping, self._pending = self._pending, {}
        sweep = partial(kill_sessions, set(self._sweeping))
        trio.lowlevel.start_thread_soon(sweep, self._deliver)

    def _deliver(self, result: outcome.Outcome[Collection[int]]) -> None:  # the worker
        try:
            self._token.run_sync_soon(self._finished, result)
        except trio.RunFinishedError:
            pass  # the run ended: nobody waits any more

    def _finished(self, result: outcome.Outcome[Collection[int]]) -> None:
        try:
            result.unwrap()
        except Exception:
            log.exception("killing tty sessions failed")
        batch, self._sweeping = self._sweeping or {}, None
        for done in batch.values():
            done.set()
        if self._pending:
            self._start()


_SWEEPER: Final = trio.lowlevel.RunVar[_SessionSweeper]("sweeper")


def _sweeper() -> _SessionSweeper:
    try:
        return _SWEEPER.get()
    except LookupError:
        sweeper = _SessionSweeper()
        _SWEEPER.set(sweeper)
        return sweeper


PreExec = Callable[[], None] | None
_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})


async def _discard(process: trio.Process) -> None:
    """SIGKILL a child spawned for a start that then failed (its group: it leads a new
    session), and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    with trio.CancelScope(shield=True):
        await process.wait()


def _check_executable(path: str) -> None:
    """What exec would refuse, refused before a launcher runs (else the launcher would
    start, fail to exec and exit 1)."""
    os.stat(path)  # FileNotFoundError, NotADirectoryError, PermissionError
    if not os.access(path, os.X_OK) or os.path.isdir(path):
        raise PermissionError(errno.EACCES, f"Permission denied: {path!r}")


def _launcher_command(spec: SpawnSpec, executable: str) -> str:
    """What the launcher execs. It execs that name and passes it as argv[0] (bwrap
    before 0.9 cannot set argv[0]), so the bare name (``sh``, as without a sandbox)
    when the child's PATH finds the same file there; else the resolved path."""
    name = spec.argv[0]
    if spec.arg0 is None and "/" not in name:
        found = shutil.which(name, path=spec.env.get("PATH", os.defpath))
        if found is not None and os.path.realpath(found) == os.path.realpath(executable):
            return name
    return executable


async def _spawn_pipes(
    spec: SpawnSpec,
    executable: str,
    args: list[str],
    pass_fds: tuple[int, ...],
    preexec: PreExec,
) -> Child:
    process = await open_process(
        args,
        executable=executable,
        cwd=spec.cwd,
        env=spec.env,
        stdin=subprocess.PIPE if spec.pipe_stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=pass_fds,
        preexec_fn=preexec,
    )
    assert isinstance(process.stdout, trio.lowlevel.FdStream)
    assert isinstance(process.stderr, trio.lowlevel.FdStream)
    for stream in (process.stdout, process.stderr):
        _grow_pipe(stream.fileno())
    outputs: list[tuple[StreamName, trio.lowlevel.FdStream]] = [
        ("stdout", process.stdout),
        ("stderr", process.stderr),
    ]
    return Child(process, outputs, process.stdin, None, spec.exit_grace)


def _grow_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size for this user, or not Linux: keep 64 KiB


async def _spawn_pty(
    spec: SpawnSpec,
    executable: str,
    args: list[str],
    pass_fds: tuple[int, ...],
    preexec: PreExec,
) -> Child:
    def in_child() -> None:  # pragma: no cover - runs in the child
        _become_terminal_leader()
        if preexec is not None:
            preexec()

    master, slave = os.openpty()
    try:
        set_winsize(master, *spec.tty_size)
        process = await open_process(
            args,
            executable=executable,
            cwd=spec.cwd,
            env=spec.env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            pass_fds=pass_fds,
            preexec_fn=in_child,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    # One fd for both directions: FdStream dups it, so each side closes its own copy.
    streams: list[trio.lowlevel.FdStream] = []
    try:
        for _ in range(2):
            streams.append(trio.lowlevel.FdStream(os.dup(master)))
    except BaseException:
        # Out of descriptors with the child running: it must not run on unseen.
        for stream in streams:
            stream.close()
        os.close(master)
        await _discard(process)
        raise
    reader, writer = streams
    os.set_blocking(master, False)
    return Child(process, [("pty", reader)], writer, master, spec.exit_grace)
