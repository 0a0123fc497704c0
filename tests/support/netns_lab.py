"""Several "hosts" on one machine: network namespaces joined by a bridge, for tests that
kill, partition or slow one daemon independently of the others (to slow one, a
:class:`HubDelayProxy` in the hub stands in front of it: no ``sch_netem`` needed).

Topology (every address from 198.18.0.0/15, the range reserved for network benchmark
tests; every interface lives in a namespace this module made, so no packet reaches
the machine's own interfaces)::

    namespace <prefix>hub:  br0 198.18.0.1/24 (the client: the test's own sockets)
       ├─ h1 ── veth ── eth0 198.18.0.11/24 in namespace <prefix>h1 (a daemon)
       ├─ h2 ── veth ── eth0 198.18.0.12/24 in namespace <prefix>h2
       └─ ...

The test's client reaches the hub by switching the *calling thread* into the hub
namespace (``setns``): sockets it creates afterwards live there. ``Lab.close`` kills
every daemon and deletes every namespace, also after a failure; ``sweep_stale``
deletes what a killed test run left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import attrs
import trio

from benchmarks.delay_proxy import DelayProxy
from tests.support.daemon_process import ROOT, Daemon, eventually

NETWORK: Final = ipaddress.ip_network("198.18.0.0/24")
HUB_ADDRESS: Final = "198.18.0.1"
ALLOWED: Final = ipaddress.ip_network("198.18.0.0/15")
PREFIX: Final = "exrt-pool-"
CLONE_NEWNET: Final = 0x40000000
TOKEN: Final = "netns-lab-token-6c1f0e9a2b7d4c35"


class LabUnavailable(Exception):
    """The kernel or the user cannot make namespaces here (the reason is the message)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def _netns_names() -> list[str]:
    output = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in output.splitlines() if line.strip()]


def _pids_in(namespace: str) -> list[int]:
    output = _ip("netns", "pids", namespace, check=False).stdout
    return [int(pid) for pid in output.split() if int(pid) != os.getpid()]


def sweep_stale() -> None:
    """Delete namespaces a previous run of this module left (its pid is gone)."""
    for name in _netns_names():
        if not name.startswith(PREFIX):
            continue
        owner = name[len(PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and Path(f"/proc/{owner}").exists():
            continue  # a live run's
        for pid in _pids_in(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _ip("netns", "del", name, check=False)


def check_available() -> None:
    """Raise LabUnavailable with the reason if this machine cannot host a lab."""
    if sys.platform != "linux":
        raise LabUnavailable("network namespaces are Linux only")
    if shutil.which("ip") is None:
        raise LabUnavailable("no `ip` command (Debian: apt-get install iproute2)")
    if os.geteuid() != 0:
        raise LabUnavailable("creating network namespaces needs root (CI runs as root)")
    probe = f"{PREFIX}{os.getpid()}-probe"
    result = _ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        raise LabUnavailable(f"the kernel refused `ip netns add`: {result.stderr.strip()}")
    try:
        veth = _ip(
            "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1", check=False
        )
        bridge = _ip("-n", probe, "link", "add", "b0", "type", "bridge", check=False)
    finally:
        _ip("netns", "del", probe, check=False)
    for what, result in (("veth pairs", veth), ("bridges", bridge)):
        if result.returncode != 0:
            raise LabUnavailable(f"the kernel refused {what}: {result.stderr.strip()}")


@attrs.define(eq=False)
class Host:
    index: int
    namespace: str
    address: str
    hub_link: str  # its veth's end on the bridge, in the hub namespace
    daemon: Daemon | None = None

    def url(self, port: int) -> str:
        return f"ws://{self.address}:{port}"


class Lab:
    """Made by :func:`open_lab`; hosts are added with :meth:`add_host`."""

    def __init__(self, nursery: trio.Nursery, port: int) -> None:
        self._nursery = nursery
        self.port = port
        self.tag = f"{PREFIX}{os.getpid()}-{os.urandom(3).hex()}"
        self.hub = f"{self.tag}-hub"
        self.hosts: list[Host] = []
        self._namespaces: list[str] = []

    # --- topology ---------------------------------------------------------------------

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def make_hub(self) -> None:
        self._add_namespace(self.hub)
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "addr", "add", f"{HUB_ADDRESS}/24", "dev", "br0")
        _ip("-n", self.hub, "link", "set", "br0", "up")

    def add_host(self) -> Host:
        index = len(self.hosts) + 1
        address = str(NETWORK.network_address + 10 + index)
        assert ipaddress.ip_address(address) in ALLOWED
        namespace = f"{self.tag}-h{index}"
        self._add_namespace(namespace)
        hub_link = f"h{index}"
        _ip("-n", self.hub, "link", "add", hub_link, "type", "veth",
            "peer", "name", "eth0", "netns", namespace)  # fmt: skip
        _ip("-n", self.hub, "link", "set", hub_link, "master", "br0")
        _ip("-n", self.hub, "link", "set", hub_link, "up")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        host = Host(index, namespace, address, hub_link)
        self.hosts.append(host)
        return host

    # --- faults ---------------------------------------------------------------------

    async def start_daemon(self, host: Host, *extra: str) -> Daemon:
        """``exec-runtime serve`` in the host's namespace, on its address; returns once
        it printed its URL (it listens)."""
        env = {**os.environ, "EXEC_RUNTIME_TOKEN": TOKEN}
        process = await trio.lowlevel.open_process(
            ["ip", "netns", "exec", host.namespace, sys.executable, "-m", "exec_runtime",
             "serve", "--listen", host.url(self.port), "--log-level", "WARNING", *extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )  # fmt: skip
        daemon = Daemon(process)
        assert process.stdout is not None and process.stderr is not None
        self._nursery.start_soon(_drain, process.stdout, daemon.stdout, daemon.stdout_closed)
        self._nursery.start_soon(_drain, process.stderr, daemon.stderr, trio.Event())
        await eventually(lambda: b"\n" in daemon.stdout or process.returncode is not None)
        assert process.returncode is None, daemon.stderr.decode()
        host.daemon = daemon
        return daemon

    async def kill(self, host: Host) -> None:
        """SIGKILL the host's daemon (``ip netns exec`` execs it: the same pid)."""
        assert host.daemon is not None
        await host.daemon.kill()

    def partition(self, host: Host) -> None:
        """Cut the host off: its link to the bridge goes down (nothing is reset)."""
        _ip("-n", self.hub, "link", "set", host.hub_link, "down")

    def heal(self, host: Host) -> None:
        _ip("-n", self.hub, "link", "set", host.hub_link, "up")

    # --- the client side ------------------------------------------------------------

    @contextlib.contextmanager
    def in_hub(self) -> Iterator[None]:
        """Run the calling thread in the hub namespace: sockets made meanwhile are there."""
        libc = ctypes.CDLL(None, use_errno=True)
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.hub}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the hub namespace")
            try:
                yield
            finally:
                if libc.setns(original, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back to the original namespace")
        finally:
            os.close(target)
            os.close(original)

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            for host in self.hosts:
                if host.daemon is not None:
                    await host.daemon.kill()
            for name in reversed(self._namespaces):
                for pid in _pids_in(name):  # a daemon's children, its watchdog
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                _ip("netns", "del", name, check=False)
            self._namespaces.clear()


class HubDelayProxy(DelayProxy):
    """``benchmarks.delay_proxy.DelayProxy`` listening on the hub's bridge address (run
    it in the hub namespace): a host reached through it is slowed by ``delay`` each way."""

    @property
    def url(self) -> str:
        return f"ws://{HUB_ADDRESS}:{self.port}"

    async def run(
        self, *, task_status: trio.TaskStatus[DelayProxy] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host=HUB_ADDRESS)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._handle, listeners)


async def _drain(stream: trio.abc.ReceiveStream, into: bytearray, done: trio.Event) -> None:
    async with stream:
        while data := await stream.receive_some(65536):
            into += data
    done.set()


@contextlib.asynccontextmanager
async def open_lab(nursery: trio.Nursery, hosts: int, port: int = 7700) -> AsyncIterator[Lab]:
    """A hub and ``hosts`` hosts (no daemon yet); everything is removed on the way out."""
    sweep_stale()
    lab = Lab(nursery, port)
    try:
        lab.make_hub()
        for _ in range(hosts):
            lab.add_host()
        yield lab
    finally:
        await lab.close()
