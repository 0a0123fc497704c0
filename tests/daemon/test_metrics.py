"""Metrics (PROTOCOL §12): the ``exec_server_*`` instruments read with an in-memory
SDK reader (delta temporality), Prometheus ``/metrics``, OTLP/HTTP from a daemon
subprocess, the client's ``exec_client_*`` counters, and JSON logs."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import signal
import string
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio_websocket
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader

import exec_runtime
import protocol_schema as wire
from exec_runtime import ServerConfig, serve
from exec_runtime._cli.main import main
from exec_runtime._core.redact import fingerprint
from exec_runtime._daemon.log_format import JsonFormatter
from exec_runtime._daemon.metrics import VOCABULARY
from tests.support.wire_client import RawClient, start_params

DELTA = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}

Points = dict[tuple[str, frozenset[tuple[str, Any]]], Any]


def new_reader() -> tuple[InMemoryMetricReader, MeterProvider]:
    reader = InMemoryMetricReader(preferred_temporality=DELTA)
    return reader, MeterProvider(metric_readers=[reader])


def collect(reader: InMemoryMetricReader) -> Points:
    """(name, attributes) -> a value, or (count, sum) for a histogram."""
    points: Points = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, frozenset((point.attributes or {}).items()))
                    value = getattr(point, "value", None)
                    points[key] = value if value is not None else (point.count, point.sum)
    return points


def at(points: Points, name: str, **attributes: str) -> Any:
    return points.get((name, frozenset(attributes.items())))


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader, provider = new_reader()
    reader.provider = provider  # type: ignore[attr-defined]
    yield reader
    provider.shutdown()


@pytest.fixture
def server_config(reader: InMemoryMetricReader) -> ServerConfig:
    return ServerConfig(meter_provider=reader.provider)  # type: ignore[attr-defined]


async def test_delta_counters_once_and_active_gauges_every_collection(
    connect: Any, reader: InMemoryMetricReader
) -> None:
    with trio.fail_after(10):
        client = await connect()
        await client.call("environment/status")
        await client.start("sleeper", ["sleep", "30"])
        first = collect(reader)
        assert at(first, "exec_server_connections_total", transport="websocket") == 1
        assert at(first, "exec_server_requests_total", method="initialize", result="success") == 1
        assert (
            at(first, "exec_server_requests_total", method="environment/status", result="success")
            == 1
        )
        count, _ = at(
            first, "exec_server_request_duration_seconds", method="process/start", result="success"
        )
        assert count == 1
        assert at(first, "exec_server_request_queue_duration_seconds", method="process/start")
        assert at(first, "exec_server_connections_active", transport="websocket") == 1
        assert at(first, "exec_server_processes_active") == 1

        second = collect(reader)  # nothing happened since: delta counters say nothing
        assert not [key for key in second if key[0].endswith("_total")]
        assert at(second, "exec_server_connections_active", transport="websocket") == 1
        assert at(second, "exec_server_connections_active", transport="stdio") == 0
        assert at(second, "exec_server_processes_active") == 1
        await client.call("process/terminate", {"processId": "sleeper"})
        await client.wait_closed("sleeper")


async def test_each_exit_is_one_finished_point_with_its_result(
    connect: Any, reader: InMemoryMetricReader
) -> None:
    with trio.fail_after(10):
        client = await connect()
        await client.start("zero", ["true"])
        await client.start("three", ["sh", "-c", "exit 3"])
        await client.start("killed", ["sleep", "30"])
        await client.wait_closed("zero")
        await client.wait_closed("three")
        assert await client.call("process/terminate", {"processId": "killed"}) == {"running": True}
        await client.wait_closed("killed")
        # A terminate after the end, or a second one, records nothing more.
        await client.call("process/terminate", {"processId": "killed"})
        points = collect(reader)
        finished = {
            dict(attrs)["result"]: value
            for (name, attrs), value in points.items()
            if name == "exec_server_processes_finished_total"
        }
        assert finished == {"success": 1, "error": 1, "terminated": 1}
        durations = {
            dict(attrs)["result"]: value[0]
            for (name, attrs), value in points.items()
            if name == "exec_server_process_duration_seconds"
        }
        assert durations == {"success": 1, "error": 1, "terminated": 1}
        assert at(points, "exec_server_processes_active") == 0


async def test_a_shutdown_ends_a_running_process_as_terminated(
    reader: InMemoryMetricReader, server_config: ServerConfig
) -> None:
    with trio.fail_after(15):
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                lambda task_status: serve(server_config, shutdown=shutdown, task_status=task_status)
            )
            ws = await trio_websocket.connect_websocket_url(nursery, url)
            client = RawClient(ws, nursery)
            await client.handshake()
            await client.start("runs", ["sleep", "30"])
            assert at(collect(reader), "exec_server_processes_active") == 1
            shutdown.set()
            await client.wait_closed("runs")
            await ws.aclose()
            nursery.cancel_scope.cancel()
        points = collect(reader)
        assert at(points, "exec_server_processes_finished_total", result="terminated") == 1
        assert at(points, "exec_server_processes_finished_total", result="error") is None
        assert at(points, "exec_server_processes_active") == 0


async def test_an_unknown_method_is_counted_as_unknown(
    connect: Any, reader: InMemoryMetricReader
) -> None:
    with trio.fail_after(10):
        client = await connect()
        reply = await client.request("no/such/method/at-/tmp/x", {})
        assert reply["error"]["code"] == wire.errors.METHOD_NOT_FOUND
        points = collect(reader)
        assert at(points, "exec_server_requests_total", method="unknown", result="error") == 1
        methods = {dict(attrs).get("method") for (_, attrs) in points}
        assert "no/such/method/at-/tmp/x" not in methods


@pytest.mark.parametrize("backend", ["local", "remote"])
async def test_client_counters_mirror_statistics(
    reader: InMemoryMetricReader, nursery: trio.Nursery, backend: str
) -> None:
    """The host's meter provider, passed to open_local / open_client, gets the
    client's counters; a reconnect is counted as statistics() counts it."""
    provider = reader.provider  # type: ignore[attr-defined]
    with trio.fail_after(20):
        if backend == "local":
            opened = exec_runtime.open_local(meter_provider=provider)
        else:
            url = await nursery.start(serve, ServerConfig())
            opened = exec_runtime.open_client(url, meter_provider=provider)
        async with opened as client:
            await client.run(["true"])
            if backend == "remote":
                client._link.mark_lost()  # the transport drops: the client resumes
                await client.run(["true"])
            points = collect(reader)
            calls = {
                dict(attrs)["method"]: value
                for (name, attrs), value in points.items()
                if name == "exec_client_calls_total"
            }
            stats = client.statistics()
            assert calls.get("process/start") == stats.calls["process/start"] >= 1
            assert set(calls) <= VOCABULARY
            if backend == "remote":
                assert stats.reconnects >= 1
                assert at(points, "exec_client_reconnects_total") == stats.reconnects


# --- Prometheus -------------------------------------------------------------------


async def _http_get(url: str, path: str, token: str | None = None) -> tuple[int, bytes]:
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_prometheus_metrics_need_the_token_and_parse(nursery: trio.Nursery) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with trio.fail_after(10):
        config = ServerConfig(metrics=True, token="s3cret-token")
        url = await nursery.start(serve, config)
        ws = await trio_websocket.connect_websocket_url(
            nursery, url, extra_headers=[(b"Authorization", b"Bearer s3cret-token")]
        )
        client = RawClient(ws, nursery)
        await client.handshake()
        await client.start("one", ["true"])
        await client.wait_closed("one")

        assert (await _http_get(url, "/metrics"))[0] == 401
        assert (await _http_get(url, "/metrics", "wrong"))[0] == 401
        assert (await _http_get(url, "/readyz"))[0] == 200  # open, by design
        status, body = await _http_get(url, "/metrics", "s3cret-token")
        assert status == 200
        samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
        }
        assert (
            samples[("exec_server_connections_active", frozenset({("transport", "websocket")}))]
            == 1
        )
        assert (
            samples[("exec_server_connections_total", frozenset({("transport", "websocket")}))] == 1
        )
        assert (
            samples[("exec_server_processes_finished_total", frozenset({("result", "success")}))]
            == 1
        )
        started = frozenset({("method", "process/start"), ("result", "success")})
        assert samples[("exec_server_requests_total", started)] == 1
        assert samples[("exec_server_request_duration_seconds_count", started)] == 1
        assert (
            "exec_server_request_duration_seconds_bucket",
            started | {("le", "0.005")},
        ) in samples
        assert b"s3cret-token" not in body
        await ws.aclose()


async def test_without_the_metrics_flag_there_is_no_metrics_page(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(10):
        url = await nursery.start(serve, ServerConfig())
        assert (await _http_get(url, "/metrics"))[0] == 426


def test_metrics_without_the_extra_fail_at_start_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.prometheus", None)
    assert main(["serve", "--metrics"]) == 2
    assert "pip install 'exec-runtime[prometheus]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.metric_exporter", None)
    assert main(["serve", "--metrics-otlp-endpoint", "http://127.0.0.1:9/v1/metrics"]) == 2
    assert "pip install 'exec-runtime[otlp]'" in capsys.readouterr().err


def test_metrics_need_a_listener() -> None:
    with pytest.raises(ValueError, match="not stdio"):
        exec_runtime._daemon.server.check_startup(ServerConfig(listen="stdio", metrics=True))


# --- OTLP from a daemon subprocess ---------------------------------------------------


async def _receive_otlp(
    listener: trio.SocketListener, bodies: list[bytes], task_status: trio.TaskStatus[None]
) -> None:
    task_status.started()
    while True:
        stream = await listener.accept()
        async with stream:
            buffered = b""
            while True:
                data = buffered
                while b"\r\n\r\n" not in data:
                    chunk = await stream.receive_some()
                    if not chunk:
                        break
                    data += chunk
                if b"\r\n\r\n" not in data:
                    break
                head, _, rest = data.partition(b"\r\n\r\n")
                headers = dict(
                    line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:]
                )
                headers = {k.lower(): v for k, v in headers.items()}
                length = int(headers.get("content-length", "0"))
                while len(rest) < length:
                    rest += await stream.receive_some()
                body, buffered = rest[:length], rest[length:]
                if headers.get("content-encoding") == "gzip":
                    body = gzip.GzipFile(fileobj=io.BytesIO(body)).read()
                bodies.append(body)
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                    b"Content-Length: 0\r\n\r\n"
                )


@pytest.mark.parametrize("how", ["stdin EOF", "SIGTERM", "SIGINT"])
async def test_otlp_points_are_flushed_as_the_daemon_exits(nursery: trio.Nursery, how: str) -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    with trio.fail_after(30):
        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listener.socket.getsockname()[1]
        bodies: list[bytes] = []
        await nursery.start(_receive_otlp, listener, bodies)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env["OTEL_METRIC_EXPORT_INTERVAL"] = "600000"  # only the exit's flush exports
        endpoint = f"http://127.0.0.1:{port}/v1/metrics"
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "exec_runtime",
                "serve",
                "--listen",
                "stdio",
                "--metrics-otlp-endpoint",
                endpoint,
                "--log-level",
                "WARNING",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert process.stdin is not None and process.stdout is not None
        lines = [
            {"id": 1, "method": "initialize", "params": {"clientName": "otlp-test"}},
            {"method": "initialized"},
            {"id": 2, "method": "process/start", "params": start_params("p-secret", ["true"])},
        ]
        await process.stdin.send_all(b"".join(json.dumps(m).encode() + b"\n" for m in lines))
        seen = b""
        while b'"process/closed"' not in seen:
            chunk = await process.stdout.receive_some()
            assert chunk, "the daemon ended early"
            seen += chunk
        if how == "stdin EOF":
            await process.stdin.aclose()  # the daemon exits, flushing
            assert await process.wait() == 0
        else:
            process.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGINT)
            assert await process.wait() == 0
            await process.stdin.aclose()
        assert bodies, "nothing was exported"
        points: dict[tuple[str, frozenset[tuple[str, str]]], Any] = {}
        for body in bodies:
            request = ExportMetricsServiceRequest.FromString(body)
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        kind = metric.WhichOneof("data")
                        for point in getattr(metric, kind).data_points:
                            attrs = frozenset(
                                (a.key, a.value.string_value) for a in point.attributes
                            )
                            points[(metric.name, attrs)] = point
                            if kind == "sum":
                                assert metric.sum.aggregation_temporality == 1  # DELTA
        finished = points[
            ("exec_server_processes_finished_total", frozenset({("result", "success")}))
        ]
        assert finished.as_int == 1
        assert ("exec_server_connections_total", frozenset({("transport", "stdio")})) in points
        assert ("exec_server_processes_active", frozenset()) in points
        started = frozenset({("method", "process/start"), ("result", "success")})
        assert points[("exec_server_request_duration_seconds", started)].count == 1
        assert not any("p-secret" in v for _, attrs in points for _, v in attrs)


# --- property: attributes never carry what a client sent -----------------------------

_SAFE = string.ascii_letters + string.digits + "/._-"
_sent = st.text(_SAFE, min_size=4, max_size=16).filter(
    lambda text: not any(text in value for value in VOCABULARY)
)
_request = st.one_of(
    st.tuples(st.just("start"), _sent, st.lists(_sent, max_size=3), st.booleans()),
    st.tuples(st.just("read"), _sent),
    st.tuples(st.just("terminate"), _sent),
    st.tuples(st.sampled_from(["fs/readFile", "fs/getMetadata"]), _sent),
    st.tuples(st.just("method"), _sent),
)

_PROPERTY_READER, _PROPERTY_PROVIDER = new_reader()


@settings(max_examples=25, deadline=None)
@given(requests=st.lists(_request, min_size=1, max_size=6))
def test_no_attribute_carries_an_id_a_path_or_an_argument(requests: list[tuple[Any, ...]]) -> None:
    sent: set[str] = set()

    async def scenario() -> None:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                config = ServerConfig(meter_provider=_PROPERTY_PROVIDER)
                url = await nursery.start(serve, config)
                ws = await trio_websocket.connect_websocket_url(nursery, url)
                client = RawClient(ws, nursery)
                await client.handshake()
                for kind, *args in requests:
                    if kind == "start":
                        process_id, argv, in_tmp = args
                        sent.update([process_id, *argv])
                        params = start_params(process_id, ["echo", *argv])
                        if in_tmp:
                            params["cwd"] = f"file:///tmp/{argv[0] if argv else process_id}"
                            sent.add(params["cwd"])
                        await client.request("process/start", params)
                    elif kind in ("read", "terminate"):
                        sent.add(args[0])
                        await client.request(f"process/{kind}", {"processId": args[0]})
                    elif kind == "method":
                        sent.add(args[0])
                        await client.request(args[0], {"path": args[0]})
                    else:
                        path = "/tmp/" + args[0]
                        sent.add(path)
                        await client.request(kind, {"path": "file://" + path})
                for process_id in list(client.notifications):
                    if process_id != "__unmatched__":
                        await client.request("process/terminate", {"processId": process_id})
                await ws.aclose()
                nursery.cancel_scope.cancel()

    trio.run(scenario)
    points = collect(_PROPERTY_READER)
    assert points
    for _name, attrs in points:
        for _key, value in attrs:
            assert value in VOCABULARY
            assert not any(text in value for text in sent)
            assert str(os.getpid()) not in value


# --- JSON logs --------------------------------------------------------------------


async def test_json_logs_name_the_session_by_its_fingerprint() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("exec_runtime")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with trio.fail_after(10):
            async with exec_runtime.open_local() as client:
                await client.run(["true"])
                session_id = client.session_id
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert session_id is not None
    text = stream.getvalue()
    entries = [json.loads(line) for line in text.splitlines()]
    attached = [e for e in entries if "attached to session" in e["message"]]
    assert attached and attached[0]["session"] == fingerprint(session_id)
    for entry in entries:
        assert {"time", "level", "logger", "message", "pid"} <= set(entry)
    assert session_id not in text
