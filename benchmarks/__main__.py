"""``python -m benchmarks [--quick] [--json out.json] [--only NAME...] [--install-peers]``.

Runs every scenario (each measures exec-runtime and a baseline in the same run), prints
one table, and writes every figure plus a description of the machine as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from . import (
    cold_path,
    concurrency,
    interactive,
    metrics,
    one_shot,
    peers,
    pool,
    recovery,
    sandbox,
    scale,
    throughput,
    wide_area,
)
from ._common import Options, ScenarioResult, fmt, render_profiles
from ._machine import cpu_snapshot, cpu_usage, describe_machine

Scenario = Callable[[Options], Awaitable[ScenarioResult]]

SCENARIOS: dict[str, Scenario] = {
    one_shot.NAME: one_shot.run,
    wide_area.NAME: wide_area.run,
    throughput.NAME: throughput.run,
    cold_path.NAME: cold_path.run,
    interactive.NAME: interactive.run,
    concurrency.NAME: concurrency.run,
    recovery.NAME: recovery.run,
    peers.NAME: peers.run,
    sandbox.NAME: sandbox.run,
    pool.NAME: pool.run,
    metrics.NAME: metrics.run,
    scale.NAME: scale.run,
}
DEFAULT_OFF = {scale.NAME}  # runs only with --scale (or --only scale)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples, smaller payloads")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure here")
    parser.add_argument(
        "--only", nargs="+", choices=list(SCENARIOS), metavar="NAME", help=", ".join(SCENARIOS)
    )
    parser.add_argument(
        "--install-peers",
        action="store_true",
        help="apt-get install openssh-server if sshd is missing (peers scenario)",
    )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="run daemon and client under pyinstrument"
    )
    parser.add_argument("--cache-dir", type=Path, help="peer venvs (~/.cache/exec-runtime-bench)")
    parser.add_argument(
        "--markdown", type=Path, metavar="OUT", help="also write the table as markdown"
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="also run 10,000 concurrent processes, 100 clients x 100 (~1-2 min)",
    )
    args = parser.parse_args(argv)
    opts = Options(quick=args.quick, install_peers=args.install_peers, profile_dir=args.profile)
    if args.cache_dir is not None:
        opts.cache_dir = args.cache_dir.expanduser()

    if args.profile is not None:
        try:
            import pyinstrument  # noqa: F401
        except ImportError:
            parser.error("--profile needs pyinstrument (pip install pyinstrument)")
    _raise_fd_limit()
    started = time.time()
    machine = describe_machine()
    results: list[ScenarioResult] = []
    default = [name for name in SCENARIOS if name not in DEFAULT_OFF or args.scale]
    for name in args.only or default:
        print(f"== {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        cpu0 = cpu_snapshot()
        try:
            result = trio.run(SCENARIOS[name], opts)
        except BaseException as exc:  # one scenario's failure never stops the runner
            if isinstance(exc, KeyboardInterrupt):
                raise
            text = "".join(traceback.format_exception(exc))
            print(
                text if len(text) < 6000 else text[:3000] + "\n...\n" + text[-3000:],
                file=sys.stderr,
            )
            result = ScenarioResult(name, error=f"{type(exc).__name__}: {exc}")
        result.seconds = time.perf_counter() - t0
        result.figures["cpu"] = cpu_usage(cpu0, cpu_snapshot())
        results.append(result)
        others = result.figures["cpu"]["others_cores"]
        print(
            f"   {name}: {result.seconds:.1f} s; other processes used {others:.2f} cores",
            file=sys.stderr,
            flush=True,
        )

    machine["load_average_end"] = _loadavg()
    if opts.profile_dir is not None:
        for path in render_profiles(opts.profile_dir):
            print(f"profile: {path}", file=sys.stderr)
    print(render_table(results))
    if args.markdown is not None:
        args.markdown.write_text(render_markdown([r.as_dict() for r in results]) + "\n")
    if args.json is not None:
        document = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "quick": args.quick,
            "machine": machine,
            "scenarios": [r.as_dict() for r in results],
        }
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def render_table(results: list[ScenarioResult]) -> str:
    header = ("scenario", "ours", "baseline", "ratio", "notes")
    lines: list[tuple[str, ...]] = []
    for result in results:
        if result.error is not None:
            lines.append((result.name, "-", "-", "-", f"ERROR {result.error}"))
        for row in result.rows:
            ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
            lines.append(
                (
                    row.scenario,
                    fmt(row.ours, row.unit),
                    fmt(row.baseline, row.unit),
                    ratio,
                    row.notes,
                )
            )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header[:4])]
    out = []
    out.append(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)) + " | notes")
    out.append("-+-".join("-" * w for w in widths) + "-+------")
    for line in lines:
        cells = [
            line[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(line[1:4], widths[1:], strict=True)),
        ]
        out.append(" | ".join(cells) + " | " + line[4])
    return "\n".join(out)


def render_markdown(scenarios: list[dict[str, Any]]) -> str:
    """The table as markdown, from ``ScenarioResult.as_dict()`` (or a saved JSON file)."""
    out = ["| scenario | ours | baseline | ratio | notes |", "|---|---:|---:|---:|---|"]
    for scenario in scenarios:
        if scenario.get("error"):
            out.append(f"| {scenario['name']} | - | - | - | ERROR {scenario['error']} |")
        for row in scenario["rows"]:
            ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
            ours, base = fmt(row["ours"], row["unit"]), fmt(row["baseline"], row["unit"])
            notes = row["notes"].replace("|", "/")
            out.append(f"| {row['scenario']} | {ours} | {base} | {ratio} | {notes} |")
    return "\n".join(out)


def _raise_fd_limit() -> None:
    """1,000 concurrent children need ~3,000 fds; daemon subprocesses inherit this."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def _loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


if __name__ == "__main__":
    raise SystemExit(main())
