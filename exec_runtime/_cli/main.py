"""``exec-runtime serve | run | schema``. ``main(argv) -> int`` so tests can call it."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import stat
import sys
from collections.abc import Sequence

import trio

from .._daemon import config as defaults
from .._core.sequence import DEFAULT_RETAIN_BYTES
from .._daemon.budget import default_budgets
from .._daemon.config import DEFAULT_ACK_WINDOW_BYTES, ServerConfig
from .._daemon.fds import DEFAULT_FD_RESERVE, raise_nofile_limit
from .._daemon.log_format import configure_logging
from .._daemon.metrics_export import otlp_endpoint_from_env
from .._daemon.server import StartupError, check_startup, log_state, serve
from .._malloc import tune_malloc
from .observability import add_observability_arguments as _add_observability_arguments

TOKEN_ENV = "EXEC_RUNTIME_TOKEN"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SIGINT_EXIT = 128 + signal.SIGINT
# Signals a child may be sent (process/signal) or that a shell or nohup commonly
# ignores for the daemon; see _unignore_for_children.
CHILD_SIGNALS = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


def _seconds(text: str) -> float:
    """A duration >= 0; ``inf`` means never. NaN is refused (argparse names the option)."""
    value = _float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def _timeout(text: str) -> float:
    """A finite duration > 0: a bound that must bound something."""
    value = _float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exec-runtime", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser("serve", help="run the daemon")
    p_serve.add_argument("--listen", default="ws://127.0.0.1:0", help="ws://IP:PORT or stdio")
    p_serve.add_argument("--retain-bytes", type=int, default=DEFAULT_RETAIN_BYTES)
    p_serve.add_argument(
        "--ack-window-bytes",
        type=int,
        default=DEFAULT_ACK_WINDOW_BYTES,
        help="unacknowledged output held per process for an acknowledging client",
    )
    p_serve.add_argument("--closed-ttl", type=_seconds, default=30.0, metavar="SECONDS")
    p_serve.add_argument("--detached-ttl", type=_seconds, default=30.0, metavar="SECONDS")
    p_serve.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO",
        metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)} (any case); default %(default)s",
    )
    _add_observability_arguments(p_serve)
    p_serve.add_argument(
        "--no-orphan-watchdog",
        dest="orphan_watchdog",
        action="store_false",
        help="no watchdog process: if the daemon is killed outright (SIGKILL, OOM), "
        "its processes run on",
    )
    auth = p_serve.add_argument_group("auth and TLS")
    auth.add_argument(
        "--token-file",
        metavar="PATH",
        help=f"require 'Authorization: Bearer <token>' (the file's content, trimmed); "
        f"default: ${TOKEN_ENV} if set",
    )
    auth.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="allow a non-loopback --listen address without a token",
    )
    auth.add_argument("--tls-cert", metavar="PATH", help="PEM certificate chain: serve wss://")
    auth.add_argument("--tls-key", metavar="PATH", help="PEM private key (if not in --tls-cert)")
    limits = p_serve.add_argument_group("limits")
    limits.add_argument(
        "--max-message-bytes",
        type=int,
        default=defaults.DEFAULT_MAX_MESSAGE_BYTES,
        metavar="N",
        help="a bigger message closes the connection (code 1009); default %(default)s",
    )
    limits.add_argument(
        "--max-json-values",
        type=int,
        default=defaults.DEFAULT_MAX_JSON_VALUES,
        metavar="N",
        help="a message with more JSON values gets -32600; default %(default)s",
    )
    limits.add_argument(
        "--max-sessions",
        type=int,
        default=defaults.DEFAULT_MAX_SESSIONS,
        metavar="N",
        help="live sessions, attached or detached; default %(default)s",
    )
    limits.add_argument(
        "--max-processes-per-session",
        type=int,
        default=defaults.DEFAULT_MAX_PROCESSES_PER_SESSION,
        metavar="N",
        help="processes not yet closed, per session; default %(default)s",
    )
    limits.add_argument(
        "--max-closed-processes-per-session",
        type=int,
        default=defaults.DEFAULT_MAX_CLOSED_PROCESSES_PER_SESSION,
        metavar="N",
        help="closed processes kept for reads until --closed-ttl, per session; past it "
        "the oldest is forgotten; default %(default)s",
    )
    limits.add_argument(
        "--max-detached-sessions",
        type=int,
        default=defaults.DEFAULT_MAX_DETACHED_SESSIONS,
        metavar="N",
        help="past it the session detached longest ago is ended; default %(default)s",
    )
    limits.add_argument(
        "--max-concurrent-requests",
        type=int,
        default=defaults.DEFAULT_MAX_CONCURRENT_REQUESTS,
        metavar="N",
        help="per connection; further requests wait their turn; default %(default)s",
    )
    output, buffers, connection = default_budgets()
    for flag, default, what in (
        ("--daemon-output-bytes", output, "process output held over every process "
         "(read, retained, unacknowledged); past it the producing processes pause"),
        ("--daemon-buffer-bytes", buffers, "requests being handled and replies not yet "
         "written, over every connection; past it connections stop reading"),
        ("--connection-buffer-bytes", connection, "the same for one connection"),
    ):
        limits.add_argument(
            flag,
            type=int,
            default=default,
            metavar="BYTES",
            help=f"{what}; default from this machine's memory: %s (docs/security.md)"
            % default,
        )
    limits.add_argument(
        "--fd-reserve",
        type=int,
        default=DEFAULT_FD_RESERVE,
        metavar="N",
        help="file descriptors kept free for accepting connections and the watchdog "
        "(at most an eighth of the limit): starts and fs/open that would take them are "
        "refused; default %(default)s",
    )
    limits.add_argument(
        "--handshake-timeout",
        type=_timeout,
        default=defaults.DEFAULT_HANDSHAKE_TIMEOUT,
        metavar="SECONDS",
        help="for TLS and the HTTP request head; default %(default)s",
    )
    limits.add_argument(
        "--max-pending-connections",
        type=int,
        default=defaults.DEFAULT_MAX_PENDING_CONNECTIONS,
        metavar="N",
        help="connections still in TLS or the HTTP request head; at the limit new ones "
        "wait in the listen backlog; default %(default)s",
    )
    limits.add_argument(
        "--ping-interval",
        type=_seconds,
        default=defaults.DEFAULT_PING_INTERVAL,
        metavar="SECONDS",
        help="WebSocket keepalive pings, 0 disables them; default %(default)s",
    )
    limits.add_argument(
        "--ping-timeout",
        type=_timeout,
        default=defaults.DEFAULT_PING_TIMEOUT,
        metavar="SECONDS",
        help="an otherwise idle peer silent this long after a ping is dropped; "
        "default %(default)s",
    )
    limits.add_argument(
        "--resume-probe-timeout",
        type=_timeout,
        default=defaults.DEFAULT_RESUME_PROBE_TIMEOUT,
        metavar="SECONDS",
        help="a resume of a session still attached pings its connection, which is closed "
        "if silent this long; default %(default)s",
    )
    limits.add_argument(
        "--shutdown-grace",
        type=_seconds,
        default=defaults.DEFAULT_SHUTDOWN_GRACE,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, SIGKILL the process groups still running after this; "
        "default %(default)s",
    )

    sandbox = p_serve.add_argument_group("sandbox (PROTOCOL §11)")
    sandbox.add_argument(
        "--require-sandbox",
        action="store_true",
        help="refuse every process/start that asks for no confinement",
    )
    sandbox.add_argument(
        "--default-sandbox",
        choices=defaults.DEFAULT_SANDBOX_PROFILES,
        help="confine starts that carry no sandbox intent with this profile "
        "(the workspace is the start's cwd)",
    )
    sandbox.add_argument(
        "--sandbox-mechanisms",
        type=_mechanisms,
        default=defaults.SANDBOX_MECHANISMS,
        metavar="LIST",
        help="mechanisms that may enforce a sandbox, in order of preference "
        "(bwrap, landlock); 'none' refuses every sandboxed request; default bwrap,landlock",
    )
    sandbox.add_argument(
        "--bwrap-path", metavar="PATH", help="bubblewrap's path (default: bwrap on PATH)"
    )

    p_schema = sub.add_parser("schema", help="write the protocol's JSON Schema")
    p_schema.add_argument("out", nargs="?", default="-", help="file to write (default stdout)")

    from .run import add_run_parser

    add_run_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _build_parser().parse_args(argv)
        if args.command == "schema":
            return _schema_main(args.out)
        if args.command == "serve":
            return _serve_main(args)
        from .run import run_main

        return run_main(args)
    except KeyboardInterrupt:
        # Ctrl-C before the command installed its own handling (say, during start-up):
        # exit as a shell reports SIGINT, without a traceback.
        return SIGINT_EXIT


def _schema_main(out: str) -> int:
    from protocol_schema.__main__ import main as schema_main

    try:
        return schema_main([out])
    except OSError as exc:
        print(f"exec-runtime schema: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _serve_main(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    try:
        config = ServerConfig(
            listen=args.listen,
            retain_bytes=args.retain_bytes,
            ack_window_bytes=args.ack_window_bytes,
            closed_ttl=args.closed_ttl,
            detached_ttl=args.detached_ttl,
            token=_read_token(args.token_file),
            allow_unauthenticated=args.allow_unauthenticated,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            max_message_bytes=args.max_message_bytes,
            max_json_values=args.max_json_values,
            max_sessions=args.max_sessions,
            max_processes_per_session=args.max_processes_per_session,
            max_closed_processes_per_session=args.max_closed_processes_per_session,
            max_detached_sessions=args.max_detached_sessions,
            max_concurrent_requests=args.max_concurrent_requests,
            handshake_timeout=args.handshake_timeout,
            max_pending_connections=args.max_pending_connections,
            ping_interval=args.ping_interval,
            ping_timeout=args.ping_timeout,
            resume_probe_timeout=args.resume_probe_timeout,
            shutdown_grace=args.shutdown_grace,
            orphan_watchdog=args.orphan_watchdog,
            fd_reserve=args.fd_reserve,
            daemon_output_bytes=args.daemon_output_bytes,
            daemon_buffer_bytes=args.daemon_buffer_bytes,
            connection_buffer_bytes=args.connection_buffer_bytes,
            require_sandbox=args.require_sandbox,
            default_sandbox=args.default_sandbox,
            sandbox_mechanisms=args.sandbox_mechanisms,
            bwrap_path=args.bwrap_path,
            metrics=args.metrics,
            metrics_otlp_endpoint=args.metrics_otlp_endpoint or otlp_endpoint_from_env(),
        )
        check_startup(config)
    except (ValueError, StartupError) as exc:
        print(f"exec-runtime: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unreadable token file, certificate or key
        print(f"exec-runtime: {exc}", file=sys.stderr)
        return 2
    tune_malloc()
    raise_nofile_limit()
    ignored = _unignore_for_children()
    # Never lethal, from the start: SIGUSR1 asks for a state summary (once serving),
    # SIGUSR2 means nothing. Handled, not ignored, so children start with the defaults.
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, _ignore_signal)
    # SIGHUP and SIGQUIT stop the daemon as SIGTERM does, unless it was started
    # ignoring them (``nohup``, a shell's background job): then it still shrugs them off.
    stop_signals = [signal.SIGTERM, signal.SIGINT]
    stop_signals += [s for s in (signal.SIGHUP, signal.SIGQUIT) if s not in ignored]
    try:
        trio.run(_serve_until_signal, config, stop_signals)
    except StartupError as exc:
        print(f"exec-runtime: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"exec-runtime: {exc}", file=sys.stderr)
        return 1
    return 0


def _mechanisms(text: str) -> tuple[str, ...]:
    if text.strip() == "none":
        return ()
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _ignore_signal(signum: int, frame: object) -> None:
    """The daemon's stand-in for SIG_IGN; see :func:`_unignore_for_children`."""


def _unignore_for_children() -> set[signal.Signals]:
    """Replace SIG_IGN with a handler that does nothing, for each of CHILD_SIGNALS;
    returns the signals that were ignored.

    An ignored signal stays ignored across exec, so a daemon started under ``nohup``
    (SIGHUP) or as a shell's background job (SIGINT, SIGQUIT) would hand that to every
    child: ``process/signal hangup`` or ``interrupt`` would do nothing. A *handled*
    signal is reset to SIG_DFL by exec, so the children start with the defaults, while
    the daemon itself still shrugs the signal off. (Not ``preexec_fn``, which costs
    every spawn its vfork.) SIGINT and SIGTERM are then taken over by the daemon's
    own stop handling in :func:`_serve_until_signal`, as before.
    """
    ignored = set()
    for signum in CHILD_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_IGN:
            signal.signal(signum, _ignore_signal)
            ignored.add(signum)
    return ignored


def _read_token(token_file: str | None) -> str | None:
    """The token from ``--token-file`` or ``$EXEC_RUNTIME_TOKEN``. The variable is
    removed from our environment so no child process can inherit it."""
    from_env = os.environ.pop(TOKEN_ENV, None)
    if token_file is not None:
        with open(token_file, encoding="utf-8") as file:
            token = file.read().strip()
            mode = os.fstat(file.fileno()).st_mode
        if not token:
            raise ValueError(f"--token-file {token_file} is empty")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            logging.getLogger("exec_runtime").warning(
                "--token-file %s is readable by other users (chmod 600 it)", token_file
            )
        return token
    if from_env is not None:
        if not from_env.strip():
            raise ValueError(f"{TOKEN_ENV} is set but empty")
        return from_env.strip()
    return None


async def _serve_until_signal(
    config: ServerConfig, stop_signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    """Serve until one of ``stop_signals`` (SIGTERM, SIGINT, and SIGHUP and SIGQUIT
    unless the daemon was started ignoring them), or, for stdio, until stdin ends.

    The first signal shuts down gracefully (``serve``'s ``shutdown`` event: SIGTERM to
    every process group, SIGKILL after ``shutdown_grace``, close frames); a second
    one stops at once (SIGKILL every group). SIGUSR1 logs a state summary; SIGUSR2
    is ignored.
    """
    log = logging.getLogger("exec_runtime")
    shutdown = trio.Event()
    with trio.open_signal_receiver(*stop_signals, signal.SIGUSR1, signal.SIGUSR2) as signals:
        async with trio.open_nursery() as nursery:

            async def run_daemon(task_status: trio.TaskStatus[str]) -> None:
                await serve(config, shutdown=shutdown, task_status=task_status)
                nursery.cancel_scope.cancel()

            url = await nursery.start(run_daemon)
            if url != "stdio":
                print(url, flush=True)
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGUSR1:
                    log_state()
                    continue
                if signum == signal.SIGUSR2:
                    log.debug("received SIGUSR2: ignored")
                    continue
                if not shutdown.is_set():
                    log.info("received %s: stopping", name)
                    shutdown.set()
                else:
                    log.info("received %s again: killing every process group now", name)
                    nursery.cancel_scope.cancel()
