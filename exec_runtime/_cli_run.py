"""``exec-runtime run [--url URL] [--tty] [--cwd DIR] [--env K=V ...] -- argv...``

Streams the child's stdout and stderr live, forwards Ctrl-C as an interrupt (in a
PTY, the terminal's own Ctrl-C byte), forwards piped stdin, and exits with the child's
exit code (128+N for signal N). Without ``--url`` it runs in-process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import termios
import tty as tty_mode
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio_websocket

import protocol_schema as wire

from ._client import ExecClient
from ._client_process import ProcessHandle
from ._core.events import Exited, Failed, Output
from ._errors import ExecRuntimeError
from ._malloc import tune_malloc
from ._open import open_client, open_local

RUNTIME_FAILURE = 255  # like ssh: the runtime, not the command, failed


def add_run_parser(sub: Any) -> None:
    p_run = sub.add_parser(
        "run",
        help="run one command and stream its output",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p_run.add_argument(
        "--url", help="daemon URL (ws:// or wss://HOST:PORT); default: in-process"
    )
    p_run.add_argument(
        "--token",
        default=os.environ.get("EXEC_RUNTIME_TOKEN"),
        help="bearer token (default: $EXEC_RUNTIME_TOKEN, which unlike argv is not "
        "visible to other users)",
    )
    p_run.add_argument("--tty", action="store_true", help="run in a pseudo-terminal")
    p_run.add_argument("--cwd", help="working directory (default: the daemon's)")
    p_run.add_argument(
        "--env", action="append", default=[], metavar="K=V", help="set a variable (repeatable)"
    )
    p_run.add_argument("argv", nargs=argparse.REMAINDER, help="-- command and arguments")


def run_main(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("exec-runtime run: no command given (use: run -- cmd args...)", file=sys.stderr)
        return 2
    env: dict[str, str] = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"exec-runtime run: --env wants K=V, got {item!r}", file=sys.stderr)
            return 2
        env[name] = value
    try:
        tune_malloc()
        return trio.run(_run, args, argv, env)
    except ExecRuntimeError as exc:
        print(f"exec-runtime run: {exc}", file=sys.stderr)
        return RUNTIME_FAILURE
    except OSError as exc:
        print(f"exec-runtime run: cannot connect: {exc}", file=sys.stderr)
        return RUNTIME_FAILURE
    except trio_websocket.ConnectionRejected as exc:
        hint = " (missing or wrong --token / $EXEC_RUNTIME_TOKEN)" if exc.status_code == 401 else ""
        print(
            f"exec-runtime run: the daemon refused the connection: HTTP {exc.status_code}{hint}",
            file=sys.stderr,
        )
        return RUNTIME_FAILURE


@asynccontextmanager
async def _open(args: argparse.Namespace) -> AsyncIterator[ExecClient]:
    if args.url:
        async with open_client(args.url, token=args.token, client_name="exec-runtime run") as c:
            yield c
    else:
        async with open_local(client_name="exec-runtime run") as c:
            yield c


async def _run(args: argparse.Namespace, argv: list[str], env: dict[str, str]) -> int:
    stdin_is_tty = os.isatty(0)
    forward_stdin = not stdin_is_tty or args.tty
    size = shutil.get_terminal_size() if args.tty else None
    async with _open(args) as client:
        proc = await client.start(
            argv,
            cwd=args.cwd,
            env=env,
            env_policy=wire.EnvPolicy(inherit="all"),
            tty=args.tty,
            pipe_stdin=forward_stdin and not args.tty,
            tty_size=(size.lines, size.columns) if size else None,
        )
        with _raw_terminal(args.tty and stdin_is_tty):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_forward_signals, proc, args.tty)
                if forward_stdin:
                    nursery.start_soon(_forward_stdin, proc)
                code = await _stream_output(proc)
                nursery.cancel_scope.cancel()
        return code


async def _stream_output(proc: ProcessHandle) -> int:
    stdout = trio.wrap_file(sys.stdout.buffer)
    stderr = trio.wrap_file(sys.stderr.buffer)
    code = RUNTIME_FAILURE
    async for event in proc.events():
        if isinstance(event, Output):
            out = stderr if event.stream == "stderr" else stdout
            await out.write(event.data)
            await out.flush()
        elif isinstance(event, Exited):
            code = event.exit_code
        elif isinstance(event, Failed):
            print(f"exec-runtime run: {event.message}", file=sys.stderr)
            return RUNTIME_FAILURE
    return code


async def _forward_signals(proc: ProcessHandle, tty: bool) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGWINCH) as signals:
        async for signum in signals:
            try:
                if signum == signal.SIGWINCH:
                    if tty:
                        size = shutil.get_terminal_size()
                        await proc.resize(size.lines, size.columns)
                elif signum == signal.SIGINT:
                    await proc.signal("interrupt")
                else:
                    await proc.signal("terminate")
            except ExecRuntimeError:
                pass  # already gone


async def _forward_stdin(proc: ProcessHandle) -> None:
    try:
        while True:
            # A daemon thread per read: abandoning it on cancel cannot hang the exit.
            data = await trio.to_thread.run_sync(os.read, 0, 64 * 1024, abandon_on_cancel=True)
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
