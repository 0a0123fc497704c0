"""``exec-runtime run [--url URL] [--tty] [--cwd DIR] [--env K=V ...] -- argv...``

Streams the child's stdout and stderr live, forwards Ctrl-C as an interrupt (in a
PTY, the terminal's own Ctrl-C byte), forwards piped stdin, and exits with the child's
exit code (128+N for signal N; 127 if the command was not found, 126 if it cannot be
executed, as a shell says; 255 if the runtime failed; 2 for a usage error). Without
``--url`` it runs in-process. A relative --cwd is taken relative to the current
directory.

Leaving before the command finished terminates it (SIGKILL to its process group): a
second Ctrl-C (exit 130, or the command's code if it exited and a background child
held the output open), SIGHUP (129), a closed stdout pipe as in ``| head`` (141,
quietly), or a runtime failure (255).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil
import signal
import sys
import termios
import traceback
import tty as tty_mode
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio

import protocol_schema as wire

from .._client.client import ExecClient
from .._client.connect import open_client, unwrap_lone_exception
from .._client.process import ProcessHandle
from .._core.events import Closed, Exited, Failed, Output
from .._errors import ConnectError, ConnectionRejectedError, ExecRuntimeError, RemoteOSError
from .._local import open_local
from .._malloc import tune_malloc
from .._wire.sandbox_intent import Sandbox

RUNTIME_FAILURE = 255  # like ssh: the runtime, not the command, failed
COMMAND_NOT_FOUND = 127  # as a shell says
CANNOT_EXECUTE = 126
USAGE = 2
SIGPIPE_EXIT = 128 + signal.SIGPIPE  # our reader went away, as for a shell pipeline
TERMINATE_TIMEOUT = 5.0  # seconds to kill the process on the way out


def add_run_parser(sub: Any) -> None:
    p_run = sub.add_parser(
        "run",
        help="run one command and stream its output",
        description=(__doc__ or "").replace("``", "'"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p_run.add_argument(
        "--url", help="daemon URL (ws:// or wss://HOST:PORT); default: none, in-process"
    )
    token = p_run.add_mutually_exclusive_group()
    token.add_argument(
        "--token",
        default=os.environ.get("EXEC_RUNTIME_TOKEN"),
        help="bearer token; default $EXEC_RUNTIME_TOKEN if set (unlike argv, not "
        "visible to other users), else none",
    )
    token.add_argument(
        "--token-file",
        metavar="PATH",
        help="read the bearer token from this file (trimmed); default none",
    )
    p_run.add_argument(
        "--tty", action="store_true", help="run in a pseudo-terminal; default off (pipes)"
    )
    p_run.add_argument(
        "--cwd",
        metavar="DIR",
        help="working directory, a relative one under ours; default the daemon's",
    )
    p_run.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="K=V",
        help="set a variable (repeatable), on top of the daemon's environment; default none",
    )
    p_run.add_argument(
        "--sandbox",
        choices=("read-only", "workspace-write"),
        help="confine the command (the daemon refuses if it cannot); default unconfined "
        "(unless the daemon has a --default-sandbox)",
    )
    p_run.add_argument(
        "--writable",
        action="append",
        default=[],
        metavar="DIR",
        help="with --sandbox workspace-write: a workspace root (repeatable; default the cwd)",
    )
    p_run.add_argument(
        "--network",
        action="store_true",
        help="with --sandbox: allow network access; default off",
    )
    p_run.add_argument("argv", nargs=argparse.REMAINDER, help="-- command and arguments")


def run_main(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("exec-runtime run: no command given (use: run -- cmd args...)", file=sys.stderr)
        return USAGE
    env: dict[str, str] = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"exec-runtime run: --env wants K=V, got {item!r}", file=sys.stderr)
            return USAGE
        env[name] = value
    if args.url is not None and urlsplit(args.url).scheme not in ("ws", "wss"):
        print(
            f"exec-runtime run: --url must be ws://HOST:PORT or wss://HOST:PORT, got {args.url!r}",
            file=sys.stderr,
        )
        return USAGE
    if (args.writable or args.network) and args.sandbox is None:
        print("exec-runtime run: --writable and --network need --sandbox", file=sys.stderr)
        return USAGE
    if args.writable and args.sandbox != "workspace-write":
        print("exec-runtime run: --writable needs --sandbox workspace-write", file=sys.stderr)
        return USAGE
    # A relative --cwd means the one under our current directory, not the daemon's.
    cwd = os.path.abspath(args.cwd) if args.cwd else None
    _open_closed_stdin()
    tune_malloc()
    try:
        return trio.run(_CliRun(args, argv, env, cwd).run)
    except KeyboardInterrupt:  # Ctrl-C before our signal receiver was installed
        return 128 + signal.SIGINT
    except Exception:  # a bug: report it, but keep the promise that 255 is ours
        traceback.print_exc()
        return RUNTIME_FAILURE


def _open_closed_stdin() -> None:
    """Run with a closed fd 0 (``<&-``) as if stdin were empty: otherwise the first
    descriptor we open (a socket, an epoll fd) becomes "stdin" and is read from."""
    try:
        os.fstat(0)
    except OSError:
        fd = os.open(os.devnull, os.O_RDONLY)
        if fd != 0:
            os.dup2(fd, 0)
            os.close(fd)


class _CliRun:
    """One ``exec-runtime run``: connect, start, stream, and exit with a code.

    Whenever it leaves before the process closed (a runtime error, a Failed event, a
    broken pipe on our stdout, SIGHUP, a second Ctrl-C) it terminates the process on
    the way out, so a ``--url`` daemon does not keep it running for the session's TTL.
    """

    def __init__(
        self, args: argparse.Namespace, argv: list[str], env: dict[str, str], cwd: str | None
    ) -> None:
        self.args = args
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.tty: bool = args.tty
        # leave() cancels one of these, and run() returns leave_code. Before we are
        # connected, `outer`: there is nothing to clean up. After, `work`, which is
        # inside the client's context: the client (and, in-process, the daemon) must
        # keep running while the process is terminated on the way out.
        self.outer = trio.CancelScope()
        self.work = trio.CancelScope()
        self.leave_code: int | None = None
        self.connected = False
        self.starting = False
        self.pending_code: int | None = None  # a signal that came while starting
        self.proc: ProcessHandle | None = None
        self.closed = False  # Closed seen: nothing left to terminate
        self.interrupts = 0

    def leave(self, code: int) -> None:
        if self.leave_code is None:
            self.leave_code = code
        (self.work if self.connected else self.outer).cancel()

    async def run(self) -> int:
        watched = [signal.SIGINT, signal.SIGTERM, signal.SIGWINCH]
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # not under nohup
            watched.append(signal.SIGHUP)
        with trio.open_signal_receiver(*watched) as signals, unwrap_lone_exception():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._handle_signals, signals, nursery)
                try:
                    with self.outer:
                        return await self._run_or_report()
                    assert self.leave_code is not None
                    return self.leave_code
                finally:
                    nursery.cancel_scope.cancel()

    async def _run_or_report(self) -> int:
        """Everything that can go wrong, as a message and an exit code (inside our
        nursery, where an exception would reach run_main wrapped in a group)."""
        url = self.args.url
        try:
            return await self._session()
        except ConnectionRejectedError as exc:
            hint = (
                " (missing or wrong --token / --token-file / $EXEC_RUNTIME_TOKEN)"
                if exc.status_code == 401
                else ""
            )
            return _fail(f"the daemon refused the connection: HTTP {exc.status_code}{hint}")
        except ConnectError as exc:
            return _fail(str(exc))
        except RemoteOSError as exc:
            return self._start_failed(exc)
        except ExecRuntimeError as exc:
            return _fail(str(exc))
        except OSError as exc:
            if not self.connected:
                return _fail(f"cannot connect to {url}: {exc}")
            return _fail(str(exc))
        except ValueError as exc:  # a --url without a host or with a bad port, say
            return _fail(f"--url {url}: {exc}" if not self.connected else str(exc))

    def _start_failed(self, exc: RemoteOSError) -> int:
        """The start failed with an OS error: 127 for a command not found, 126 for
        one that cannot be executed (as a shell); a bad --cwd is the runtime's 255."""
        if self.cwd is not None and exc.filename == self.cwd:
            return _fail(f"--cwd {self.cwd} is not a directory: {exc.strerror}")
        name = self.argv[0]
        print(f"exec-runtime run: {name}: {exc.strerror}", file=sys.stderr)
        if isinstance(exc, FileNotFoundError | NotADirectoryError):
            return COMMAND_NOT_FOUND
        if isinstance(exc, PermissionError | IsADirectoryError) or exc.errno == errno.ENOEXEC:
            return CANNOT_EXECUTE
        return RUNTIME_FAILURE

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[ExecClient]:
        if self.args.url:
            async with open_client(
                self.args.url,
                token=self.args.token if self.args.token_file is None else None,
                token_file=self.args.token_file,
                client_name="exec-runtime run",
            ) as client:
                self.connected = True
                yield client
        else:
            async with open_local(client_name="exec-runtime run") as client:
                self.connected = True
                yield client

    async def _session(self) -> int:
        stdin_is_tty = os.isatty(0)
        forward_stdin = not stdin_is_tty or self.tty
        size = shutil.get_terminal_size() if self.tty else None
        async with self._open() as client:
            with self.work:
                try:
                    self.starting = True
                    try:
                        proc = await client.start(
                            self.argv,
                            cwd=self.cwd,
                            env=self.env,
                            env_policy=wire.EnvPolicy(inherit="all"),
                            tty=self.tty,
                            pipe_stdin=forward_stdin and not self.tty,
                            tty_size=(size.lines, size.columns) if size else None,
                            sandbox=self._sandbox(),
                        )
                    finally:
                        self.starting = False
                    self.proc = proc
                    if self.pending_code is not None:
                        self.leave(self.pending_code)
                    with _raw_terminal(self.tty and stdin_is_tty), unwrap_lone_exception():
                        async with trio.open_nursery() as nursery:
                            if forward_stdin:
                                nursery.start_soon(_forward_stdin, proc)
                            code = await self._stream_output(proc)
                            nursery.cancel_scope.cancel()
                    return code
                finally:
                    if self.proc is not None and not self.closed:
                        await _terminate(self.proc)
        assert self.leave_code is not None  # only a cancel of `work` gets here
        return self.leave_code

    def _sandbox(self) -> Sandbox | None:
        if self.args.sandbox == "read-only":
            return Sandbox.read_only(network=self.args.network)
        if self.args.sandbox == "workspace-write":
            roots = [os.path.abspath(root) for root in self.args.writable]
            return Sandbox.workspace_write(roots, network=self.args.network)
        return None

    async def _stream_output(self, proc: ProcessHandle) -> int:
        stdout = trio.wrap_file(sys.stdout.buffer)
        stderr = trio.wrap_file(sys.stderr.buffer)
        code = RUNTIME_FAILURE
        async for event in proc.events():
            if isinstance(event, Output):
                out = stderr if event.stream == "stderr" else stdout
                try:
                    await out.write(event.data)
                    await out.flush()
                except OSError as exc:
                    return _output_failed(out.wrapped, exc)
            elif isinstance(event, Exited):
                code = event.exit_code
                if event.sandbox_denied:
                    print(
                        "exec-runtime run: the sandbox denied this command (sandboxDenied)",
                        file=sys.stderr,
                    )
            elif isinstance(event, Closed):
                self.closed = True
            elif isinstance(event, Failed):
                return _fail(event.message)
        return code

    async def _handle_signals(self, signals: AsyncIterator[int], nursery: trio.Nursery) -> None:
        async for signum in signals:
            proc = self.proc
            if signum == signal.SIGWINCH:
                if self.tty and proc is not None:
                    size = shutil.get_terminal_size()
                    nursery.start_soon(_quietly, proc.resize, size.lines, size.columns)
                continue
            code = 128 + signum
            if proc is None:
                # Connecting, or starting: cancelling a start that is on the wire could
                # leave the process running unseen, so a first signal waits for the
                # handle (then the process is terminated); a second one does not.
                if self.starting and self.pending_code is None:
                    self.pending_code = code
                else:
                    self.leave(code)
            elif signum == signal.SIGHUP:
                self.leave(code)  # our terminal is gone: so is the command
            elif signum == signal.SIGINT:
                self.interrupts += 1
                if self.interrupts == 1:
                    nursery.start_soon(_quietly, proc.signal, "interrupt")
                else:
                    # Still here after an interrupt: the command ignores it, or it
                    # exited and a background child holds its output open. Kill the
                    # group; exit with the command's code if it has one.
                    self.leave(proc.returncode if proc.returncode is not None else code)
            else:
                nursery.start_soon(_quietly, proc.signal, "terminate")


def _fail(message: str) -> int:
    print(f"exec-runtime run: {message}", file=sys.stderr)
    return RUNTIME_FAILURE


def _output_failed(stream: Any, exc: OSError) -> int:
    """Our stdout or stderr cannot be written. A closed pipe (``| head -1``) is a
    quiet exit with 128+SIGPIPE, as a shell pipeline's writer gets; anything else
    is reported. Either way the stream is pointed at /dev/null, so the interpreter's
    final flush of what is still buffered cannot complain."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    if exc.errno == errno.EPIPE:
        return SIGPIPE_EXIT
    return _fail(f"cannot write the output: {exc}")


async def _terminate(proc: ProcessHandle) -> None:
    """Kill the process group: shielded (we may be leaving on a cancel) and bounded (the
    daemon may be unreachable; the session's TTL then ends the process)."""
    with (
        trio.CancelScope(shield=True),
        trio.move_on_after(TERMINATE_TIMEOUT),
        contextlib.suppress(ExecRuntimeError, OSError),
    ):
        await proc.kill()


async def _quietly(call: Callable[..., Awaitable[None]], *args: Any) -> None:
    with contextlib.suppress(ExecRuntimeError):
        await call(*args)  # the process is gone already, or so is the daemon


async def _forward_stdin(proc: ProcessHandle) -> None:
    try:
        while True:
            # A daemon thread per read: abandoning it on cancel cannot hang the exit.
            try:
                data = await trio.to_thread.run_sync(os.read, 0, 64 * 1024, abandon_on_cancel=True)
            except OSError as exc:
                print(f"exec-runtime run: reading stdin: {exc}", file=sys.stderr)
                data = b""  # the command sees the end of its input
            if not data:
                break
            await proc.write(data)
        await proc.close_stdin()
    except ExecRuntimeError:
        pass  # the child closed its stdin or exited


@contextlib.contextmanager
def _raw_terminal(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    saved = termios.tcgetattr(0)
    tty_mode.setraw(0)
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)
