"""``exec-runtime serve | run | schema``. ``main(argv) -> int`` so tests can call it."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import stat
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import trio

from .._daemon.config import SANDBOX_MECHANISMS, ServerConfig
from .._daemon.fds import raise_nofile_limit
from .._daemon.log_format import configure_logging
from .._daemon.server import StartupError, check_startup, log_state, serve
from .._malloc import tune_malloc
from .observability import add_observability_arguments as _add_observability_arguments
from .serve_options import (
    CONFIG_ENV,
    LOG_LEVELS,
    TOKEN_ENV,
    ConfigError,
    ServeOptions,
    consumed_variables,
    env_name,
    load,
)

DESCRIPTION = """\
Run processes for a remote client over the exec-server protocol (WebSocket or stdio).

  exec-runtime serve               run the daemon (prints its URL)
  exec-runtime run -- CMD ARGS...  run one command, in-process or on a daemon (--url)
  exec-runtime schema [OUT]        write the protocol's JSON Schema

'exec-runtime COMMAND --help' lists a command's options and their defaults.
"""
SERVE_DESCRIPTION = f"""\
Run the daemon: print its URL on stdout, log to stderr, stop on SIGTERM or SIGINT.

Options come from a TOML file (--config, or ${CONFIG_ENV}), then from the
environment, then from these flags, each on top of the one before. A flag
--some-option is some_option in the file and EXEC_RUNTIME_SOME_OPTION in the
environment (--no-orphan-watchdog: orphan_watchdog = false); ${TOKEN_ENV} holds
the token itself. See the README's CLI reference and docs/exec-runtime.example.toml.
"""
SIGINT_EXIT = 128 + signal.SIGINT
MiB = 1 << 20
# Budgets whose defaults derive from the machine's memory (``_daemon/budget.py``).
MEMORY_DERIVED = ("daemon_output_bytes", "daemon_buffer_bytes", "connection_buffer_bytes")
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


def version() -> str:
    try:
        return metadata.version("exec-runtime")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


def _shown(value: object) -> str:
    """A default as ``--help`` shows it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return "never (inf)" if value == math.inf else f"{value:g} s"
    if isinstance(value, int) and value >= MiB:
        return f"{value} ({value / MiB:.0f} MiB)"
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return "none" if value is None else str(value)


class _ServeOptionAdder:
    """Adds ``serve``'s options: no argparse default (only what is given on the command
    line goes on top of the file and the environment), the real default in the help."""

    def __init__(self, defaults: ServerConfig) -> None:
        self.defaults = defaults

    def __call__(
        self,
        group: argparse._ActionsContainer,
        flag: str,
        help: str,
        *,
        dest: str | None = None,
        default: str | None = None,
        **kwargs: Any,
    ) -> None:
        dest = dest or flag.removeprefix("--").replace("-", "_")
        if default is None:
            default = _shown(getattr(self.defaults, dest))
        env = env_name(dest)
        group.add_argument(
            flag,
            dest=dest,
            default=argparse.SUPPRESS,
            help=f"{help} (${env}); default {default}",
            **kwargs,
        )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exec-runtime",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"exec-runtime {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_serve = sub.add_parser(
        "serve",
        help="run the daemon",
        description=SERVE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p_serve.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help=f"TOML file of these options (${CONFIG_ENV}); default none",
    )
    add = _ServeOptionAdder(ServerConfig())
    add(p_serve, "--listen", "ws://IP:PORT (port 0: a free one), or stdio", metavar="URL")
    add(
        p_serve,
        "--retain-bytes",
        "output per process that process/read can still see after it was pushed",
        type=int,
        metavar="BYTES",
    )
    add(
        p_serve,
        "--retain-chunks",
        "output chunks per process in that window",
        type=int,
        metavar="N",
    )
    add(
        p_serve,
        "--ack-window-bytes",
        "unacknowledged output held per process for a client that acknowledges "
        "(process/ack), past which the process is paused",
        type=int,
        metavar="BYTES",
    )
    add(
        p_serve,
        "--closed-ttl",
        "how long a closed process stays readable (process/read), inf: until its "
        "session ends",
        type=_seconds,
        metavar="SECONDS",
    )
    add(
        p_serve,
        "--detached-ttl",
        "how long a session whose connection dropped is kept, its processes running, "
        "for its client to resume it (session/resume); then its processes are killed",
        type=_seconds,
        metavar="SECONDS",
    )
    add(
        p_serve,
        "--log-level",
        f"{', '.join(LOG_LEVELS)} (any case)",
        type=str.upper,
        choices=LOG_LEVELS,
        metavar="LEVEL",
        default="INFO",
    )
    _add_observability_arguments(p_serve, add)
    add(
        p_serve,
        "--no-orphan-watchdog",
        "no watchdog process: if the daemon is killed outright (SIGKILL, OOM), its "
        "processes run on",
        dest="orphan_watchdog",
        action="store_false",
        default="a watchdog runs",
    )

    auth = p_serve.add_argument_group("auth and TLS")
    add(
        auth,
        "--token-file",
        "require 'Authorization: Bearer <token>' with the file's content, trimmed",
        metavar="PATH",
        default=f"${TOKEN_ENV} if set, else no token",
    )
    add(
        auth,
        "--allow-unauthenticated",
        "allow a non-loopback --listen address without a token",
        action="store_true",
    )
    add(auth, "--tls-cert", "PEM certificate chain: serve wss://", metavar="PATH")
    add(auth, "--tls-key", "PEM private key, if not in --tls-cert", metavar="PATH")

    limits = p_serve.add_argument_group("limits")
    for flag, metavar, kind, what in (
        ("--max-message-bytes", "BYTES", int, "a bigger message closes the connection (1009)"),
        ("--max-json-values", "N", int, "a message with more JSON values gets -32600"),
        ("--max-sessions", "N", int, "live sessions, attached or detached"),
        ("--max-processes-per-session", "N", int, "processes not yet closed, per session"),
        (
            "--max-closed-processes-per-session",
            "N",
            int,
            "closed processes kept for reads until --closed-ttl, per session; past it "
            "the oldest is forgotten",
        ),
        (
            "--max-detached-sessions",
            "N",
            int,
            "past it the session detached longest ago is ended",
        ),
        (
            "--max-concurrent-requests",
            "N",
            int,
            "per connection; further requests wait their turn",
        ),
        (
            "--daemon-output-bytes",
            "BYTES",
            int,
            "process output held over every process (read, retained, unacknowledged); "
            "past it the producing processes pause (docs/security.md)",
        ),
        (
            "--daemon-buffer-bytes",
            "BYTES",
            int,
            "requests being handled and replies not yet written, over every connection; "
            "past it connections stop reading",
        ),
        (
            "--connection-buffer-bytes",
            "BYTES",
            int,
            "the same for one connection",
        ),
        (
            "--fd-reserve",
            "N",
            int,
            "file descriptors kept free for accepting connections and the watchdog (at "
            "most an eighth of the limit): starts and fs/open that would take them are "
            "refused",
        ),
        ("--handshake-timeout", "SECONDS", _timeout, "for TLS and the HTTP request head"),
        (
            "--max-pending-connections",
            "N",
            int,
            "connections still in TLS or the HTTP request head; at the limit new ones "
            "wait in the listen backlog",
        ),
        ("--ping-interval", "SECONDS", _seconds, "WebSocket keepalive pings, 0 disables them"),
        (
            "--ping-timeout",
            "SECONDS",
            _timeout,
            "an otherwise idle peer silent this long after a ping is dropped",
        ),
        (
            "--resume-probe-timeout",
            "SECONDS",
            _timeout,
            "a resume of a session still attached pings its connection, which is closed "
            "if silent this long",
        ),
        (
            "--shutdown-grace",
            "SECONDS",
            _seconds,
            "on SIGTERM/SIGINT, SIGKILL the process groups still running after this",
        ),
    ):
        dest = flag.removeprefix("--").replace("-", "_")
        default = _shown(getattr(add.defaults, dest))
        if dest in MEMORY_DERIVED:
            default = f"from this machine's memory, here {default}"
        add(limits, flag, what, type=kind, metavar=metavar, default=default)

    sandbox = p_serve.add_argument_group("sandbox (PROTOCOL §11)")
    add(
        sandbox,
        "--require-sandbox",
        "refuse every process/start that asks for no confinement",
        action="store_true",
    )
    add(
        sandbox,
        "--default-sandbox",
        "confine starts that carry no sandbox intent with this profile (the workspace "
        "is the start's cwd)",
        choices=("read-only", "workspace-write"),
        default="none (unconfined)",
    )
    add(
        sandbox,
        "--sandbox-mechanisms",
        f"mechanisms that may enforce a sandbox, in order of preference "
        f"({', '.join(SANDBOX_MECHANISMS)}); 'none' refuses every sandboxed request",
        type=_mechanisms,
        metavar="LIST",
    )
    add(sandbox, "--bwrap-path", "bubblewrap's path", metavar="PATH", default="bwrap on PATH")

    p_schema = sub.add_parser(
        "schema",
        help="write the protocol's JSON Schema",
        description="Write the JSON Schema of every method's params and result and of "
        "every notification.",
    )
    p_schema.add_argument("out", nargs="?", default="-", help="file to write; default stdout")

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


def serve_options(
    args: argparse.Namespace,
    environ: dict[str, str] | os._Environ[str],
    read_token: Callable[[str], str] | None = None,
) -> ServeOptions:
    """``serve``'s options: the defaults, the file, ``environ``, then the flags in ``args``."""
    flags = {name: value for name, value in vars(args).items() if name not in ("command", "config")}
    return load(flags, environ, config_path=args.config, read_token=read_token)


def _serve_main(args: argparse.Namespace) -> int:
    try:
        options = serve_options(args, os.environ, read_token=_read_token_file)
    except (ConfigError, ValueError) as exc:
        print(f"exec-runtime serve: {exc}".replace("\n", "\nexec-runtime serve: "), file=sys.stderr)
        return 2
    finally:
        # Read once: no process the daemon runs inherits the token or its configuration.
        for name in consumed_variables():
            os.environ.pop(name, None)
    config = options.config
    configure_logging(options.log_level, options.log_format)
    while _STARTUP_WARNINGS:
        logging.getLogger("exec_runtime").warning(_STARTUP_WARNINGS.pop(0))
    try:
        check_startup(config)
    except (ValueError, StartupError) as exc:
        print(f"exec-runtime: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unreadable certificate or key
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


def _read_token_file(path: str) -> str:
    """The token in ``--token-file`` (trimmed); a file other users can read is logged as
    a warning once logging is configured."""
    try:
        with open(path, encoding="utf-8") as file:
            token = file.read().strip()
            mode = os.fstat(file.fileno()).st_mode
    except OSError as exc:
        raise ConfigError(f"token file {path}: {exc.strerror or exc}") from None
    if not token:
        raise ConfigError(f"token file {path} is empty")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        _STARTUP_WARNINGS.append(f"token file {path} is readable by other users (chmod 600 it)")
    return token


_STARTUP_WARNINGS: list[str] = []


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
