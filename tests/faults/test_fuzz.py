"""Fuzz a live daemon over real WebSockets: hypothesis-generated messages (wrong types,
huge ints, deep nesting, unknown fields, wrong and duplicate ids, notifications with the
wrong method), random bytes and mutated valid messages, binary frames, msgpack garbage.

Every reply must be a JSON-RPC error with a known code or a result of the method's
result type; the daemon must stay up; a second session running processes meanwhile must
see exactly its own output.

Hypothesis drives generation from a worker thread (``trio.to_thread``) and each example
crosses into the Trio loop with ``trio.from_thread.run``, so one daemon serves every
example. Scale with ``EXEC_RUNTIME_FUZZ_EXAMPLES`` (``nox -s fuzz`` runs 10k+ cases).

Safety: the daemon resolves ``argv[0]`` on a PATH holding only ``true`` and ``echo``,
and destructive filesystem methods only ever see paths inside a temporary directory.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio_websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol_schema as wire
from exec_runtime import ServerConfig, serve
from tests.support.wire_client import RawClient, output_of

EXAMPLES = int(os.environ.get("EXEC_RUNTIME_FUZZ_EXAMPLES", "300"))
"""Hypothesis examples per fuzz test (and random cases for the byte mutator)."""
KNOWN_CODES = {-32600, -32601, -32602, -32603, -32004, -32010}
NOTIFICATIONS = {"process/output", "process/exited", "process/closed"}
SAFE_FS_METHODS = [
    "fs/readFile",
    "fs/getMetadata",
    "fs/canonicalize",
    "fs/readDirectory",
    "fs/walk",
    "fs/open",
    "fs/readBlock",
    "fs/close",
]
MUTATING_FS_METHODS = ["fs/writeFile", "fs/createDirectory", "fs/remove", "fs/copy"]
SAFE_METHODS = [m for m in wire.METHODS if m not in MUTATING_FS_METHODS]
AUTO_ID = object()
"""Replaced at send time by a unique id, so the reply can be checked against the method."""


# --- strategies --------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
deep = st.integers(min_value=1, max_value=800).map(lambda n: json.loads("[" * n + "]" * n))
weird_text = st.sampled_from(["", "\x00", "\ud7ff", "é", "a" * 300, "../..", "\\", "%00"])
process_ids = (
    st.sampled_from(["p", "q"])
    | st.sampled_from(["bystander", "b0", "", "x" * 200])
    | st.text(max_size=6)
)
ints = (
    st.integers(min_value=-5, max_value=5)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**31, 2**63 - 1, 2**63, 2**64])
)
short_waits = st.sampled_from([0, 1, 50, -1, 2**70 * -1])


def fs_paths(root: str) -> st.SearchStrategy[Any]:
    names = st.sampled_from(["a", "b", "dir", "dir/c", "missing/x", "", "."])
    return st.builds(lambda name: f"file://{root}/{name}", names) | st.sampled_from(
        ["not a uri", "file://host/x", "http://x/y", "file:///\x00", "", 5, None]
    )


def method_params(root: str) -> dict[str, st.SearchStrategy[Any]]:
    """Plausible params per method, with every field sometimes of the wrong type."""
    paths = fs_paths(root)

    def fields(**members: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        # Mostly well-typed (so requests reach the handlers), sometimes any member
        # missing or of any type.
        well_typed = st.fixed_dictionaries(members)
        mistyped = st.fixed_dictionaries(
            {}, optional={name: strategy | json_values for name, strategy in members.items()}
        )
        return st.sampled_from([True, True, False]).flatmap(
            lambda well: well_typed if well else mistyped
        )

    chunk = st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()) | weird_text
    runnable = st.tuples(
        st.sampled_from(["true", "echo"]), st.lists(st.text(max_size=5), max_size=2)
    ).map(lambda parts: [parts[0], *parts[1]])
    argv = runnable | st.lists(
        st.sampled_from(["true", "echo", "nonexistent-cmd", "/nonexistent/x", "", "\x00"])
        | weird_text,
        max_size=3,
    )
    names = st.text(alphabet="ABCxyz_", min_size=1, max_size=5)
    small = st.integers(min_value=1, max_value=300)
    return {
        "initialize": fields(clientName=st.text(max_size=8), resumeSessionId=st.text(max_size=8)),
        "environment/info": fields(),
        "environment/status": fields(),
        "process/start": fields(
            processId=process_ids,
            argv=argv,
            cwd=st.just(f"file://{root}")
            | st.sampled_from(["file:///nonexistent", "x", ""])
            | paths,
            env=st.dictionaries(names, st.text(max_size=5), max_size=3)
            | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
            envPolicy=st.none()
            | st.fixed_dictionaries(
                {"inherit": st.sampled_from(["all", "none", "core", "bogus"])},
                optional={
                    "exclude": st.lists(st.text(max_size=4)),
                    "set": st.dictionaries(names, st.text(max_size=4)) | json_values,
                    "includeOnly": st.lists(st.sampled_from(["*", "PATH", "[", "**"])),
                    "ignoreDefaultExcludes": st.booleans(),
                },
            ),
            tty=st.booleans(),
            pipeStdin=st.booleans(),
            arg0=st.none() | st.text(max_size=5),
            ttySize=st.none()
            | st.fixed_dictionaries({"rows": small, "cols": small})
            | st.fixed_dictionaries({"rows": ints, "cols": ints}),
        ),
        "process/read": fields(
            processId=process_ids, afterSeq=ints, maxBytes=ints, waitMs=short_waits
        ),
        "process/write": fields(
            processId=process_ids,
            chunk=chunk,
            writeId=st.text(max_size=4),
            closeStdin=st.booleans(),
        ),
        "process/signal": fields(
            processId=process_ids,
            signal=st.sampled_from(["interrupt", "terminate", "kill", "hangup", "stop", ""]),
        ),
        "process/terminate": fields(processId=process_ids),
        "process/resize": fields(processId=process_ids, rows=ints, cols=ints),
        "fs/readFile": fields(path=paths, followSymlinks=st.booleans()),
        "fs/writeFile": fields(path=paths, dataBase64=chunk, followSymlinks=st.booleans()),
        "fs/createDirectory": fields(path=paths, recursive=st.booleans()),
        "fs/getMetadata": fields(path=paths, followSymlinks=st.booleans()),
        "fs/canonicalize": fields(path=paths),
        "fs/readDirectory": fields(path=paths),
        "fs/walk": fields(
            path=paths,
            options=st.fixed_dictionaries(
                {"maxDepth": ints, "maxDirectories": ints, "maxEntries": ints},
                optional={"followDirectorySymlinks": st.booleans()},
            ),
        ),
        "fs/remove": fields(path=paths, recursive=st.booleans(), force=st.booleans()),
        "fs/copy": fields(sourcePath=paths, destinationPath=paths, recursive=st.booleans()),
        "fs/open": fields(handleId=st.text(max_size=40), path=paths),
        "fs/readBlock": fields(handleId=st.text(max_size=4), offset=ints, len=ints),
        "fs/close": fields(handleId=st.text(max_size=4)),
    }


def messages(root: str) -> st.SearchStrategy[Any]:
    """One JSON-RPC-shaped message, or something that only looks like one."""
    params_by_method = method_params(root)
    garbage_ids = (
        st.integers(min_value=-(2**70), max_value=2**70)
        | st.sampled_from([0, -1, 1, "1", "", None, True, 1.5, [1], {"a": 1}])
        | st.text(max_size=6)
    )
    ids = st.sampled_from([True, True, False]).flatmap(
        lambda auto: st.just(AUTO_ID) if auto else garbage_ids
    )

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        shape = draw(
            st.sampled_from(["request"] * 5 + ["notification", "response", "garbage"])
        )
        if shape == "garbage":
            return draw(json_values | deep)
        message: dict[str, Any] = {}
        method = draw(
            st.sampled_from([*wire.METHODS, *wire.METHODS, *NOTIFICATIONS, "initialized"])
            | st.sampled_from(["$/cancel", "process/", "PROCESS/START", ""])
            | st.text(max_size=10)
        )
        if shape == "response":
            message["result" if draw(st.booleans()) else "error"] = draw(json_values)
        else:
            plausible = draw(st.sampled_from([True, True, True, False]))
            if method in params_by_method and plausible:
                params = draw(params_by_method[method])
            elif method in MUTATING_FS_METHODS:
                params = draw(st.none() | st.integers() | st.lists(scalars))  # never a path
            else:
                params = draw(json_values | deep)
            if draw(st.sampled_from([True] * 5 + [False])):
                message["params"] = params
            message["method"] = method
        if shape != "notification":
            message["id"] = draw(ids)
        if draw(st.sampled_from([False] * 4 + [True])):  # unknown members, trace, jsonrpc
            message.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)))
            message["trace"] = draw(json_values)
            message["jsonrpc"] = draw(st.sampled_from(["2.0", "1.0", 2]))
        return message

    return build()


# --- the harness -------------------------------------------------------------------------


class Fuzzer:
    """One connection under fuzz: sends frames, then a sentinel request, and checks
    every frame that comes back until the sentinel's reply."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, codec: wire.Codec) -> None:
        self.ws = ws
        self.codec = codec
        self.ids = itertools.count()
        self.methods: dict[str, str] = {}  # AUTO_ID value -> method
        self.cases = 0
        self.replies = 0

    def encode(self, message: Any) -> str | bytes:
        if self.codec.binary:
            return msgspec.msgpack.encode(message)
        return json.dumps(message)

    def prepare(self, message: Any) -> Any:
        if isinstance(message, dict) and message.get("id") is AUTO_ID:
            message = dict(message)
            message["id"] = f"auto-{next(self.ids)}"
            if isinstance(message.get("method"), str):
                self.methods[message["id"]] = message["method"]
            else:
                message["id"] = 7
        return message

    async def exchange(self, frames: list[str | bytes]) -> None:
        self.cases += 1
        for frame in frames:
            await self.ws.send_message(frame)
        sentinel = f"sentinel-{next(self.ids)}"
        await self.ws.send_message(self.encode({"id": sentinel, "method": "environment/status"}))
        with trio.fail_after(10):  # the daemon must keep answering this connection
            while True:
                reply = self.check(await self.ws.get_message())
                if reply.get("id") == sentinel:
                    assert "result" in reply or reply["error"]["code"] == -32600, reply
                    return

    def check(self, frame: str | bytes) -> dict[str, Any]:
        """A notification, a known-code error, or a result of the right type."""
        if self.codec.binary:
            assert isinstance(frame, bytes), "msgpack replies travel in binary frames"
            message = msgspec.msgpack.decode(frame)
        else:
            assert isinstance(frame, str), "JSON replies travel in text frames"
            message = json.loads(frame)
        assert isinstance(message, dict), message
        if "method" in message:
            assert message["method"] in NOTIFICATIONS, message
            assert isinstance(message["params"]["processId"], str)
            assert isinstance(message["params"]["seq"], int)
            return message
        self.replies += 1
        assert "id" in message, message
        request_id = message["id"]
        assert isinstance(request_id, int | str) and not isinstance(request_id, bool), message
        if "error" in message:
            assert "result" not in message, message
            error = message["error"]
            assert error["code"] in KNOWN_CODES, message
            assert isinstance(error["message"], str) and error["message"], message
            assert "internal error:" not in error["message"], message  # no handler bug
            return message
        assert set(message) == {"id", "result"}, message
        method = self.methods.get(request_id) if isinstance(request_id, str) else None
        if method in wire.METHODS:
            spec = wire.METHODS[method]
            encoded = (msgspec.msgpack if self.codec.binary else msgspec.json).encode(
                message["result"]
            )
            self.codec.decode(encoded, spec.result)  # raises if the shape is wrong
        return message


class Bystander:
    """Another session that keeps running ``cat`` round trips while the fuzz runs."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.rounds = 0
        self.stop = trio.Event()

    async def run(self) -> None:
        for number in itertools.count():
            if self.stop.is_set():
                return
            process_id = f"b{number}"
            payload = [f"round {number} line {line}\n".encode() for line in range(20)]
            await self.client.start(process_id, ["/bin/cat"], pipeStdin=True)
            for index, chunk in enumerate(payload):
                reply = await self.client.call(
                    "process/write",
                    {
                        "processId": process_id,
                        "chunk": base64.b64encode(chunk).decode(),
                        "writeId": str(index),
                    },
                )
                assert reply == {"status": "accepted"}
            await self.client.call(
                "process/write", {"processId": process_id, "closeStdin": True, "writeId": "eof"}
            )
            events = await self.client.wait_closed(process_id)
            assert output_of(events) == b"".join(payload)
            assert [m["params"]["seq"] for m in events] == list(range(1, len(events) + 1))
            assert events[-2]["params"]["exitCode"] == 0
            self.rounds += 1


@pytest.fixture
def safe_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The daemon resolves argv[0] on this PATH: ``true`` and ``echo`` only."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("true", "echo"):
        found = shutil.which(name)
        assert found is not None
        (bin_dir / name).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    root = tmp_path / "root"
    (root / "dir").mkdir(parents=True)
    (root / "a").write_bytes(b"hello")
    return root


@pytest.fixture
async def fuzz_daemon(safe_path: Path, nursery: trio.Nursery) -> AsyncIterator[str]:
    url = await nursery.start(serve, ServerConfig(closed_ttl=0.5, detached_ttl=1))
    yield url


async def open_ws(
    nursery: trio.Nursery, url: str, *, msgpack: bool = False
) -> trio_websocket.WebSocketConnection:
    return await trio_websocket.connect_websocket_url(
        nursery,
        url,
        subprotocols=[wire.MSGPACK_SUBPROTOCOL] if msgpack else None,
        max_message_size=1 << 26,
    )


async def fuzz(
    url: str,
    nursery: trio.Nursery,
    drive: Callable[[Fuzzer], None],
    *,
    msgpack: bool = False,
    handshake: bool = True,
) -> Fuzzer:
    """Run ``drive`` (blocking, in a thread) against a fresh fuzz connection while a
    bystander session works; then check the bystander and that the daemon still serves."""
    ws = await open_ws(nursery, url, msgpack=msgpack)
    if msgpack:
        assert ws.subprotocol == wire.MSGPACK_SUBPROTOCOL
    fuzzer = Fuzzer(ws, wire.MSGPACK if msgpack else wire.JSON)
    if handshake:
        await ws.send_message(
            fuzzer.encode({"id": "init", "method": "initialize", "params": {"clientName": "f"}})
        )
        assert "result" in fuzzer.check(await ws.get_message())
        await ws.send_message(fuzzer.encode({"method": "initialized"}))
    bystander = Bystander(RawClient(await open_ws(nursery, url), nursery))
    await bystander.client.handshake()
    async with trio.open_nursery() as inner:
        inner.start_soon(bystander.run)
        await trio.to_thread.run_sync(drive, fuzzer, abandon_on_cancel=True)
        bystander.stop.set()
    assert bystander.rounds >= 1
    # The daemon still takes new connections and serves them.
    fresh = RawClient(await open_ws(nursery, url), nursery)
    await fresh.handshake()
    assert await fresh.call("environment/status") == {"status": "ready"}
    for socket in (ws, bystander.client.ws, fresh.ws):
        await socket.aclose()
    return fuzzer


def hypothesis_driver(
    strategy: st.SearchStrategy[list[Any]], examples: int = EXAMPLES
) -> Callable[[Fuzzer], None]:
    def drive(fuzzer: Fuzzer) -> None:
        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def one(frames: list[Any]) -> None:
            encoded = [
                frame if isinstance(frame, str | bytes) else fuzzer.encode(fuzzer.prepare(frame))
                for frame in frames
            ]
            trio.from_thread.run(fuzzer.exchange, encoded)

        one()

    return drive


# --- the tests ---------------------------------------------------------------------------


async def test_fuzz_json_messages(fuzz_daemon: str, safe_path: Path, nursery: trio.Nursery) -> None:
    with trio.fail_after(120):
        strategy = st.lists(messages(str(safe_path)), min_size=1, max_size=3)
        fuzzer = await fuzz(fuzz_daemon, nursery, hypothesis_driver(strategy))
        assert fuzzer.cases >= min(EXAMPLES, 50)
        assert fuzzer.replies > fuzzer.cases


async def test_fuzz_json_before_the_handshake(
    fuzz_daemon: str, safe_path: Path, nursery: trio.Nursery
) -> None:
    with trio.fail_after(120):
        strategy = st.lists(messages(str(safe_path)), min_size=1, max_size=3)
        fuzzer = await fuzz(
            fuzz_daemon, nursery, hypothesis_driver(strategy, EXAMPLES // 2), handshake=False
        )
        assert fuzzer.cases >= min(EXAMPLES // 2, 25)


async def test_fuzz_raw_bytes_and_binary_frames(fuzz_daemon: str, nursery: trio.Nursery) -> None:
    with trio.fail_after(120):
        frames = st.binary(max_size=200) | st.text(max_size=100) | st.sampled_from(
            [b"\xff\xfe\xfd", b"\xc0\x80", b"\xed\xa0\x80", b"{\"id\":1,\"method\":\"\xff\"}", b""]
        )
        fuzzer = await fuzz(fuzz_daemon, nursery, hypothesis_driver(st.lists(frames, max_size=3)))
        assert fuzzer.cases >= min(EXAMPLES, 50)


async def test_fuzz_msgpack_connection(
    fuzz_daemon: str, safe_path: Path, nursery: trio.Nursery
) -> None:
    with trio.fail_after(120):
        msgpack_values = st.recursive(
            st.none()
            | st.booleans()
            | st.integers(min_value=-(2**63), max_value=2**64 - 1)
            | st.floats()
            | st.text(max_size=8)
            | st.binary(max_size=16),
            lambda children: st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=6), children, max_size=4),
            max_leaves=10,
        )
        garbage = st.binary(max_size=100) | st.text(max_size=20) | st.sampled_from(
            [b"\xc1", b"\xdd\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\x91" * 5000]
        )
        message_like = messages(str(safe_path)).filter(lambda m: not _has_huge_int(m))
        strategy = st.lists(
            message_like | msgpack_values.map(msgspec.msgpack.encode) | garbage, max_size=3
        )
        fuzzer = await fuzz(fuzz_daemon, nursery, hypothesis_driver(strategy), msgpack=True)
        assert fuzzer.cases >= min(EXAMPLES, 50)


def _has_huge_int(value: Any) -> bool:
    """msgpack cannot carry ints outside [-2**63, 2**64)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool):
            if not -(2**63) <= item < 2**64:
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


VALID_CORPUS = [
    {"id": 1, "method": "environment/status"},
    {"id": 2, "method": "environment/info", "params": {}},
    {"id": 3, "method": "process/read", "params": {"processId": "p", "afterSeq": 0}},
    {"id": 4, "method": "process/start", "params": {
        "processId": "m", "argv": ["echo", "hi"], "cwd": "file:///", "env": {}, "tty": False}},
    {"id": 5, "method": "process/write", "params": {
        "processId": "m", "chunk": "aGk=", "writeId": "w"}},
    {"id": 6, "method": "process/signal", "params": {"processId": "m", "signal": "interrupt"}},
    {"id": 7, "method": "process/terminate", "params": {"processId": "m"}},
    {"id": 8, "method": "fs/getMetadata", "params": {"path": "file:///nonexistent"}},
    {"id": 9, "method": "fs/readBlock", "params": {"handleId": "h", "offset": 0, "len": 10}},
    {"method": "initialized"},
]  # fmt: skip


def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(5)
        position = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            data[min(position, len(data) - 1)] = rng.randrange(256)
        elif choice == 1:
            data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif choice == 2:
            del data[position : position + rng.randint(1, 8)]
        elif choice == 3:
            data = data[:position]
        else:
            data[position:position] = rng.choice([b"[" * 2000, b"9" * 400, b"\\u0000", b'"'])
    return bytes(data)


async def test_fuzz_mutated_valid_messages(fuzz_daemon: str, nursery: trio.Nursery) -> None:
    """Seeded random byte mutations of valid requests, as text frames when they are
    still UTF-8 and binary frames otherwise."""
    with trio.fail_after(120):
        corpus = [json.dumps(message).encode() for message in VALID_CORPUS]

        def drive(fuzzer: Fuzzer) -> None:
            rng = random.Random(0xF022)
            for _ in range(EXAMPLES):
                frames: list[str | bytes] = []
                for _ in range(rng.randint(1, 3)):
                    data = mutate(rng, rng.choice(corpus))
                    try:
                        frames.append(data.decode() if rng.random() < 0.7 else data)
                    except UnicodeDecodeError:
                        frames.append(data)
                trio.from_thread.run(fuzzer.exchange, frames)

        fuzzer = await fuzz(fuzz_daemon, nursery, drive)
        assert fuzzer.cases == EXAMPLES


async def test_adversarial_messages_get_errors_not_crashes(
    fuzz_daemon: str, nursery: trio.Nursery
) -> None:
    """The cases fuzzing found or that fuzzing might take long to find."""
    cases: list[str | bytes] = [
        "[" * 100_000 + "]" * 100_000,
        '{"id": 1, "method": "environment/status", "params": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"id": 2, "method": "environment/status", "params": {"a": ' + '{"a": ' * 3000
        + "1" + "}" * 3001 + "}",
        '{"id": 123456789012345678901234567890, "method": "environment/status"}',
        '{"id": 1e400, "method": "environment/status"}',
        '{"id": 3, "method": "process/read", "params": {"processId": "p", "waitMs": 1e400}}',
        '{"id": 4, "method": "process/start", "params": {"processId": "n", "argv": ["e\\u0000"],'
        ' "cwd": "file:///", "env": {}}}',
        '{"id": 5, "method": "process/start", "params": {"processId": "n", "argv": ["true"],'
        ' "cwd": "file:///", "env": {"A=B": "c"}}}',
        '{"id": 6, "method": "process/start", "params": {"processId": "n", "argv": ["true"],'
        ' "cwd": "file:///", "env": {"A": "\\u0000"}}}',
        '{"id": 7, "method": "fs/readBlock", "params": {"handleId": "h", "offset": -1,'
        ' "len": 99999999999999999}}',
        '{"id": "\\ud800", "method": "environment/status"}',
        b'{"id": 8, "method": "environment/status", "params": {"x": "\xff"}}',
        '[{"id": 9, "method": "environment/status"}]',
        '{"id": 10, "id": 11, "method": "environment/status"}',
        '{"id": 12, "method": "process/output", "params": {"processId": "p", "seq": 1}}',
        '{"method": "process/start", "params": {"processId": "notified", "argv": ["true"]}}',
    ]  # fmt: skip

    def drive(fuzzer: Fuzzer) -> None:
        for case in cases:
            trio.from_thread.run(fuzzer.exchange, [case])

    with trio.fail_after(60):
        fuzzer = await fuzz(fuzz_daemon, nursery, drive)
        assert fuzzer.cases == len(cases)


async def test_an_invalid_utf8_text_frame_closes_only_that_connection(
    fuzz_daemon: str, nursery: trio.Nursery
) -> None:
    """Invalid UTF-8 in a *text* frame is a WebSocket protocol error: only that
    connection ends, at once."""
    with trio.fail_after(10):
        bystander = RawClient(await open_ws(nursery, fuzz_daemon), nursery)
        await bystander.handshake()
        stream = await trio.open_tcp_stream(*_host_port(fuzz_daemon))
        async with stream:
            await stream.send_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 101")
            payload = b'{"id":1,"method":"\xff"}'
            mask = b"\x01\x02\x03\x04"
            masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
            await stream.send_all(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
            received = b""
            with trio.fail_after(1):
                try:
                    while data := await stream.receive_some(65536):
                        received += data
                except trio.BrokenResourceError:
                    pass
            # wsproto reports the bad frame as a close (1007) from the peer, so the
            # daemon just drops the TCP connection: at most a close frame arrives.
            assert received == b"" or received[:1] == b"\x88"
        assert await bystander.call("environment/status") == {"status": "ready"}
        await bystander.ws.aclose()


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    return host, int(port)
