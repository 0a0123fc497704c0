"""``open_pool`` against in-process daemons on loopback addresses (127.0.0.x): placement,
affinity, handles that name their endpoint, the injectable resolver, wss:// checked
against the resolved name, and cleanup. Real host failures: tests/client/test_pool_netns.py."""

from __future__ import annotations

import errno
import random
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

import exec_runtime
from exec_runtime import (
    ClientClosedError,
    ExecPool,
    NoEndpointError,
    PoolProcessHandle,
    ProcessHandle,
    ServerConfig,
)
from tests.support.daemon_process import eventually

pytestmark = pytest.mark.timeout(120)


def fast_pool(
    endpoints: str | Sequence[str], **kwargs: Any
) -> AbstractAsyncContextManager[ExecPool]:
    """``open_pool`` with quick probes and re-resolution."""
    kwargs = {"probe_interval": 0.05, "probe_timeout": 1.0, "resolve_interval": 0.1, **kwargs}
    return exec_runtime.open_pool(endpoints, **kwargs)


@asynccontextmanager
async def daemons(nursery: trio.Nursery, count: int, **config: object) -> AsyncIterator[list[str]]:
    """``count`` in-process daemons on 127.0.0.1, each on its own port."""
    urls = []
    for _ in range(count):
        urls.append(await nursery.start(exec_runtime.serve, ServerConfig(**config)))
    yield urls


async def start_blocked(pool: ExecPool, count: int, **kwargs: object) -> list[PoolProcessHandle]:
    return [await pool.start(["cat"], pipe_stdin=True, **kwargs) for _ in range(count)]


async def finish(handles: Sequence[ProcessHandle]) -> None:
    for handle in handles:
        await handle.close_stdin()
    for handle in handles:
        assert await handle.wait() == 0


async def test_spreads_evenly_and_handles_name_their_endpoint(nursery: trio.Nursery) -> None:
    with trio.fail_after(30):
        async with daemons(nursery, 3) as urls, fast_pool(urls) as pool:
            assert sorted(pool.statistics().healthy) == sorted(urls)
            handles = await start_blocked(pool, 30)
            counts = Counter(handle.endpoint for handle in handles)
            assert counts == dict.fromkeys(urls, 10)
            assert all(isinstance(h, ProcessHandle) for h in handles)
            assert repr(handles[0]).endswith(f" on {handles[0].endpoint}>")
            stats = pool.statistics()
            assert {url: s.running for url, s in stats.endpoints.items()} == dict.fromkeys(urls, 10)
            await handles[0].write(b"ping\n")
            await finish(handles)
            await eventually(
                lambda: not any(s.running for s in pool.statistics().endpoints.values())
            )
            assert pool.statistics().placed == 30
            # Each endpoint's client ran exactly its processes: calls went there only.
            for url in urls:
                calls = pool.statistics().endpoints[url].client
                assert calls is not None and calls.calls["process/start"] == 10


async def test_run_places_least_loaded_and_reports_the_endpoint(nursery: trio.Nursery) -> None:
    with trio.fail_after(30):
        async with daemons(nursery, 2) as urls, fast_pool(urls) as pool:
            busy = await start_blocked(pool, 3, affinity="busy")
            # The three sit on one endpoint: every run goes to the other one.
            other = next(url for url in urls if url != busy[0].endpoint)
            async with trio.open_nursery() as runs:
                handle = await runs.start(pool.run, ["sh", "-c", "echo hi"])
                assert isinstance(handle, PoolProcessHandle) and handle.endpoint == other
            result = await pool.run(["sh", "-c", "printf ok"])
            assert result.stdout == b"ok"
            assert pool.statistics().endpoints[other].placed == 2
            await finish(busy)


async def test_affinity_pins_processes_and_fs_to_one_endpoint(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        async with (
            daemons(nursery, 3) as urls,
            fast_pool(urls, rng=random.Random(3)) as pool,
        ):
            first = await pool.start(["true"], affinity="agent-1")
            pinned = first.endpoint
            assert pool.pinned("agent-1") == pinned
            others = await start_blocked(pool, 4)  # the pinned one becomes no busier...
            later = [await pool.start(["true"], affinity="agent-1") for _ in range(5)]
            assert {h.endpoint for h in later} == {pinned}  # ...and keeps the key's work
            fs = pool.fs("agent-1")
            await fs.write_file(str(tmp_path / "f"), b"x")
            assert pool.statistics().endpoints[pinned].client.calls["fs/writeFile"] == 1  # type: ignore[union-attr]
            pool.forget_affinity("agent-1")
            assert pool.pinned("agent-1") is None
            await finish(others)
            for handle in [first, *later]:
                assert await handle.wait() == 0


async def test_an_endpoint_that_is_down_takes_nothing(nursery: trio.Nursery) -> None:
    with trio.fail_after(30):
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        await listener.aclose()  # nothing listens there now: refused
        dead = f"ws://127.0.0.1:{port}"
        async with daemons(nursery, 1) as urls, fast_pool([dead, *urls]) as pool:
            stats = pool.statistics()
            assert stats.endpoints[dead].ready is False and stats.healthy == urls
            results = [await pool.run(["true"]) for _ in range(5)]
            assert all(r.returncode == 0 for r in results)
            assert pool.statistics().endpoints[urls[0]].placed == 5


async def test_no_ready_endpoint_raises_after_the_placement_timeout() -> None:
    with trio.fail_after(30):
        async with fast_pool(
            ["ws://127.0.0.1:9"], placement_timeout=0.3, connect_timeout=2
        ) as pool:
            with pytest.raises(NoEndpointError, match="none of the 1 endpoints is ready"):
                await pool.run(["true"])


async def test_resolver_spreads_a_name_over_its_addresses_and_picks_up_new_ones(
    nursery: trio.Nursery,
) -> None:
    """A name that resolves to 127.0.0.2 and later also 127.0.0.3 (one port, as the
    pods of a headless Service)."""
    with trio.fail_after(30):
        first = await nursery.start(exec_runtime.serve, ServerConfig(listen="ws://127.0.0.2:0"))
        port = int(first.rsplit(":", 1)[1])
        await nursery.start(exec_runtime.serve, ServerConfig(listen=f"ws://127.0.0.3:{port}"))
        addresses = ["127.0.0.2"]
        asked: list[tuple[str, int]] = []

        async def resolver(host: str, port: int) -> list[str]:
            asked.append((host, port))
            await trio.lowlevel.checkpoint()
            return list(addresses)

        async with fast_pool(f"ws://daemons.test:{port}", resolver=resolver) as pool:
            assert asked[0] == ("daemons.test", port)
            assert pool.endpoints == [f"ws://127.0.0.2:{port}"]
            addresses.append("127.0.0.3")
            await eventually(lambda: len(pool.statistics().healthy) == 2)
            handles = await start_blocked(pool, 4)
            assert Counter(h.endpoint for h in handles) == {
                f"ws://127.0.0.2:{port}": 2,
                f"ws://127.0.0.3:{port}": 2,
            }
            # The first address leaves: it takes nothing new, and retires once drained.
            addresses.remove("127.0.0.2")
            leaving = f"ws://127.0.0.2:{port}"
            await eventually(lambda: not pool.statistics().endpoints[leaving].present)
            more = await start_blocked(pool, 2)
            assert {h.endpoint for h in more} == {f"ws://127.0.0.3:{port}"}
            await finish(handles)
            await eventually(lambda: leaving not in pool.endpoints)
            await finish(more)


async def test_wss_checks_the_certificate_against_the_name(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert = tmp_path / "server.pem"
    ca.issue_cert("daemons.test").private_key_and_cert_chain_pem.write_to_path(cert)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    with trio.fail_after(30):
        url = await nursery.start(exec_runtime.serve, ServerConfig(tls_cert=str(cert)))
        port = int(url.rsplit(":", 1)[1])

        async def resolver(host: str, port: int) -> list[str]:
            await trio.lowlevel.checkpoint()
            return ["127.0.0.1"]

        named = f"wss://daemons.test:{port}"
        async with fast_pool(named, resolver=resolver, ssl_context=trusting) as pool:
            assert pool.statistics().healthy == [f"wss://127.0.0.1:{port}"]
            assert (await pool.run(["sh", "-c", "printf tls"])).stdout == b"tls"
        # The same certificate reached by its address: not the name it carries.
        async with fast_pool(
            f"wss://127.0.0.1:{port}",
            ssl_context=trusting,
            placement_timeout=0.5,
            connect_timeout=2,
        ) as pool:
            with pytest.raises(NoEndpointError):
                await pool.run(["true"])


async def test_aclose_ends_everything_and_later_calls_raise(nursery: trio.Nursery) -> None:
    with trio.fail_after(30):
        async with daemons(nursery, 2) as urls, fast_pool(urls) as pool:
            handles = await start_blocked(pool, 2)
            await pool.aclose()
            await pool.aclose()  # idempotent
            assert pool.statistics().state == "closed"
            with pytest.raises(ClientClosedError):
                await pool.run(["true"])
            for handle in handles:
                with pytest.raises(ClientClosedError):
                    await handle.wait()


async def test_pool_fs_has_the_client_fs_defaults(nursery: trio.Nursery, tmp_path: Path) -> None:
    """``pool.fs()`` is a ``client.fs``: ``remove`` is ``os.remove``/``rmdir`` unless
    told otherwise, ``walk`` needs no limits."""
    with trio.fail_after(30):
        async with daemons(nursery, 1) as urls, fast_pool(urls) as pool:
            fs = pool.fs()
            (tmp_path / "d" / "e").mkdir(parents=True)
            with pytest.raises(OSError) as caught:
                await fs.remove(str(tmp_path / "d"))
            assert isinstance(caught.value, exec_runtime.RemoteOSError)
            assert caught.value.errno == errno.ENOTEMPTY
            with pytest.raises(FileNotFoundError):
                await fs.remove(str(tmp_path / "missing"))
            listed = await fs.walk(str(tmp_path))
            assert [e.path for e in listed.entries] == [f"{tmp_path}/d", f"{tmp_path}/d/e"]
            await fs.remove(str(tmp_path / "d"), recursive=True)
            assert not (tmp_path / "d").exists()


async def test_bad_arguments_fail_at_once() -> None:
    with pytest.raises(ValueError, match="at least one"):
        async with exec_runtime.open_pool([]):
            pass
    with pytest.raises(ValueError, match="ws:// or wss://"):
        async with exec_runtime.open_pool(["http://x:1"]):
            pass
    with pytest.raises(ValueError, match="probe_interval"):
        async with exec_runtime.open_pool(["ws://x:1"], probe_interval=0):
            pass


async def test_a_failed_resolution_keeps_the_endpoints(nursery: trio.Nursery) -> None:
    with trio.fail_after(30):
        url = await nursery.start(exec_runtime.serve, ServerConfig(listen="ws://127.0.0.2:0"))
        port = int(url.rsplit(":", 1)[1])
        failing = False

        async def resolver(host: str, port: int) -> list[str]:
            await trio.lowlevel.checkpoint()
            if failing:
                raise OSError("temporary failure in name resolution")
            return ["127.0.0.2"]

        async with fast_pool(f"ws://daemons.test:{port}", resolver=resolver) as pool:
            failing = True
            errors = pool.statistics().resolution_errors
            await eventually(lambda: pool.statistics().resolution_errors > errors + 1)
            assert pool.statistics().healthy == [url]
            assert (await pool.run(["sh", "-c", "printf still"])).stdout == b"still"


async def test_start_forwards_hold_output(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pool.start(hold_output=True)`` holds output for a late consumer as the
    client's does (a 64 KiB client queue and retention: without it, this loses output)."""
    import exec_runtime._client.process as client_process
    from tests.support.children import writer_script

    monkeypatch.setattr(client_process, "QUEUE_MAX_BYTES", 64 * 1024)
    size = 1024 * 1024
    with trio.fail_after(30):
        async with daemons(nursery, 1, retain_bytes=64 * 1024) as urls, fast_pool(urls) as pool:
            proc = await pool.start(writer_script(size), hold_output=True)
            assert await proc.wait() == 0
            data = b""
            async for event in proc.events():
                assert not isinstance(event, exec_runtime.Failed), event
                if isinstance(event, exec_runtime.Output):
                    data += event.data
            assert len(data) == size
