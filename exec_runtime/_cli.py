"""``exec-runtime serve | run | schema``. ``main(argv) -> int`` so tests can call it."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from ._config import ServerConfig
from ._core.sequence import DEFAULT_RETAIN_BYTES
from ._server import serve


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exec-runtime", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser("serve", help="run the daemon")
    p_serve.add_argument("--listen", default="ws://127.0.0.1:0", help="ws://IP:PORT or stdio")
    p_serve.add_argument("--retain-bytes", type=int, default=DEFAULT_RETAIN_BYTES)
    p_serve.add_argument("--closed-ttl", type=float, default=30.0, metavar="SECONDS")
    p_serve.add_argument("--detached-ttl", type=float, default=30.0, metavar="SECONDS")
    p_serve.add_argument("--log-level", default="INFO")

    p_schema = sub.add_parser("schema", help="write the protocol's JSON Schema")
    p_schema.add_argument("out", nargs="?", default="-", help="file to write (default stdout)")

    from ._cli_run import add_run_parser

    add_run_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "schema":
        from protocol_schema.__main__ import main as schema_main

        return schema_main([args.out])
    if args.command == "serve":
        return _serve_main(args)
    from ._cli_run import run_main

    return run_main(args)


def _serve_main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = ServerConfig(
            listen=args.listen,
            retain_bytes=args.retain_bytes,
            closed_ttl=args.closed_ttl,
            detached_ttl=args.detached_ttl,
        )
    except ValueError as exc:
        print(f"exec-runtime: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(_serve_until_signal, config)
    except OSError as exc:
        print(f"exec-runtime: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve_until_signal(config: ServerConfig) -> None:
    """Serve until SIGTERM/SIGINT (or, for stdio, until stdin ends); then clean up."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def run_daemon(task_status: trio.TaskStatus[str]) -> None:
                await serve(config, task_status=task_status)
                nursery.cancel_scope.cancel()

            url = await nursery.start(run_daemon)
            if url != "stdio":
                print(url, flush=True)
            async for signum in signals:
                logging.getLogger("exec_runtime").info(
                    "received %s: stopping", signal.Signals(signum).name
                )
                break
            nursery.cancel_scope.cancel()
