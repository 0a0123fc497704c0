"""One client connection: handshake, ordered checks, concurrent handlers, one writer.

The reader loop does everything that must keep wire order (parsing, handshake-order
errors, invalid params) inline, then runs each request in its own task, so a long-poll
read never blocks a terminate. Outgoing frames leave in the order they are produced:
when nothing is queued or being written, the producer (a handler, a sequencer) writes
them itself under the send lock; otherwise they join one bounded outbox that one
writer task drains, batching what waits into one write (``_send_frames``).
"""

from __future__ import annotations

import contextvars
import functools
import logging
import math
import os
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
import trio
from opentelemetry import trace
from opentelemetry.context import Context

import protocol_schema as wire

from .._core.events import Closed, Exited, Output, SeqEvent
from .._wire.tracing import parent_of, request_span
from .._wire.transport import (
    CLIENT_MAX_MESSAGE_BYTES,
    Frame,
    InputEnded,
    MessageTransport,
    TransportClosed,
)
from .budget import ByteBudget, reserve_both
from .child import READ_SIZE
from .config import DEFAULT_MAX_JSON_VALUES
from .environment_info import environment_info
from .fs_sandbox import guarded
from .fs_service import MAX_BLOCK_LEN, MAX_READ_FILE_BYTES, FsService
from .log_format import bind_log_context
from .metrics import clock
from .paths import path_from_file_uri
from .request_order import RequestOrder, Turn
from .rpc_error import RpcError
from .sandbox import SandboxEnforcer
from .session import Session, SessionRegistry

log = logging.getLogger("exec_runtime.connection")

Handler = Callable[[Any], Awaitable[Any]]

MAX_MESSAGE_VALUES: Final = DEFAULT_MAX_JSON_VALUES
"""By default a message holding more JSON values than this is rejected (PROTOCOL §1)."""
_TOO_DEEP: Final = "malformed message: nested too deeply"
WRITE_BATCH_BYTES: Final = 512 * 1024
_COUNTED_REPLY_BYTES: Final = 4096
"""Replies at least this big count against the buffer budgets until written (smaller
ones are bounded by the requests in flight, whose payloads count)."""
_SMALL_REPLY_BYTES: Final = 64 * 1024
_LISTING_REPLY_BYTES: Final = 8 << 20
"""Reserved for an fs/readDirectory or fs/walk reply before it is listed (settled to
its real size once encoded)."""
_REPLY_CHARGE: contextvars.ContextVar[list[int]] = contextvars.ContextVar("reply_charge")
"""In a request's task: the bytes held for its reply in the buffer budgets."""
"""The writer joins queued frames into one write up to about this size."""


def _value_limit_error(
    codec: wire.Codec, data: bytes | bytearray | str, limit: int = MAX_MESSAGE_VALUES
) -> wire.RequestId | None:
    """The id to reject ``data`` with if it holds more than ``limit`` values.

    Cheap for ordinary messages: a JSON value other than the first takes at least two
    bytes ("0,"), and the count of ``,`` ``:`` ``[`` bounds the count of values from
    above (base64 holds none of them). A msgpack value takes at least one byte. Only a
    message past these bounds is decoded to be counted exactly. The reply uses the
    request's id when it has one, else -1.
    """
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) <= (limit if codec.binary else 2 * limit - 1):
        return None
    if codec.binary:
        decode: Callable[[bytes | bytearray], Any] = msgspec.msgpack.decode
    else:
        bound = 1 + raw.count(b",") + raw.count(b":") + raw.count(b"[")
        if bound <= limit:
            return None
        decode = msgspec.json.decode
    try:
        value = decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None  # not a message at all: the envelope decoder reports it
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            request_id = value.get("id") if isinstance(value, dict) else None
            if isinstance(request_id, bool) or not isinstance(request_id, int | str):
                return wire.errors.MALFORMED_ID
            return request_id
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _size(frame: Frame) -> int:
    return len(frame) if isinstance(frame, bytes) else sum(len(piece) for piece in frame)


def _notification(process_id: str, event: SeqEvent) -> wire.Notification:
    params: Any
    if isinstance(event, Output):
        method = "process/output"
        params = wire.ProcessOutputParams(
            process_id=process_id, seq=event.seq, stream=event.stream, chunk=event.data
        )
    elif isinstance(event, Exited):
        method = "process/exited"
        params = wire.ProcessExitedParams(
            process_id=process_id,
            seq=event.seq,
            exit_code=event.exit_code,
            sandbox_denied=event.sandbox_denied,
        )
    else:
        assert isinstance(event, Closed)
        method = "process/closed"
        params = wire.ProcessClosedParams(process_id=process_id, seq=event.seq)
    return wire.Notification(method=method, params=params)


def _mark_error(span: trace.Span, code: int, message: str) -> None:
    span.set_attribute("rpc.jsonrpc.error_code", code)
    span.set_status(trace.Status(trace.StatusCode.ERROR, message))


class Connection:
    def __init__(
        self,
        transport: MessageTransport,
        registry: SessionRegistry,
        probe: Callable[[], None] | None = None,
    ) -> None:
        self.transport = transport
        self._probe = probe
        self.codec = transport.codec
        self.registry = registry
        self.config = registry.config
        self.session: Session | None = None
        self.initialized = False
        self.fs = FsService()
        self._sandbox = SandboxEnforcer(self.config.sandbox_mechanisms, self.config.bwrap_path)
        # Each frame with the bytes it holds in the buffer budgets (a reply's), given
        # back once it is written.
        self._outbox_send, self._outbox_receive = trio.open_memory_channel[tuple[Frame, int]](
            registry.config.outbox_frames
        )
        self.buffers = ByteBudget(registry.config.connection_buffer_bytes, "connection")
        """Request payloads read and not yet handled, replies not yet written; every
        charge here is also one to the daemon's ``registry.buffer_budget``."""
        self._shared_buffers = registry.buffer_budget
        self.reader_waiting = False
        """The reader waits for room in the buffer budgets (for the state summary)."""
        self._send_lock = trio.StrictFIFOLock()
        self._unsent = 0
        """Frames in the outbox or held by the writer: while any, nobody writes directly."""
        self._max_values = registry.config.max_json_values
        # What a client takes: ours 64 MiB (the default), a peer of ours with a bigger
        # --max-message-bytes more.
        self._result_limit = max(registry.config.max_message_bytes, CLIENT_MAX_MESSAGE_BYTES)
        self._too_many_values = f"message has more than {self._max_values} JSON values"
        # Past this many requests in flight the reader waits for one to finish: the
        # connection stops reading (TCP backpressure), and wire order is kept.
        self._request_slots = trio.Semaphore(registry.config.max_concurrent_requests)
        self._order = RequestOrder()
        self._in_flight = 0  # requests dispatched and not yet answered
        self._replied = trio.Event()  # set (and replaced) as each one is answered
        self._writer_done = trio.Event()
        self._tracer_provider = registry.config.tracer_provider
        self._metrics = registry.metrics
        self._received = 0.0  # when the message being dispatched was read (metrics)
        self._handlers: dict[str, Handler] = {
            "environment/info": self._environment_info,
            "environment/status": self._environment_status,
            "process/start": self._process_start,
            "process/read": self._process_read,
            "process/write": self._process_write,
            "process/signal": self._process_signal,
            "process/terminate": self._process_terminate,
            "process/resize": self._process_resize,
            "fs/readFile": self.fs.read_file,
            "fs/writeFile": self.fs.write_file,
            "fs/createDirectory": self.fs.create_directory,
            "fs/getMetadata": self.fs.get_metadata,
            "fs/canonicalize": self.fs.canonicalize,
            "fs/readDirectory": self.fs.read_directory,
            "fs/walk": self.fs.walk,
            "fs/remove": self.fs.remove,
            "fs/copy": self.fs.copy,
            "fs/open": self.fs.open,
            "fs/readBlock": self.fs.read_block,
            "fs/close": self.fs.close,
        }
        for method, handler in list(self._handlers.items()):
            if method.startswith("fs/"):
                self._handlers[method] = guarded(method, handler, self._sandbox)
        for method, estimate in (
            ("fs/readFile", self._read_file_reply),
            ("fs/readBlock", self._read_block_reply),
            ("fs/readDirectory", self._listing_reply),
            ("fs/walk", self._listing_reply),
        ):
            self._handlers[method] = self._reserving(estimate, self._handlers[method])

    async def serve(self) -> None:
        """Serve until the peer goes away; then detach the session and close handles."""
        ended = self._metrics.connection_opened(self.transport)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                try:
                    if await self._read_loop(nursery):
                        await self._finish_replies()
                finally:
                    self._detach()
                    nursery.cancel_scope.cancel()
        finally:
            ended()
            # Every task is done: what is still charged are frames never written.
            self._release(self.buffers.used)
            with trio.CancelScope(shield=True):
                await self.fs.aclose()

    @property
    def flushed(self) -> bool:
        """EventSink: no frame in the outbox or being written."""
        return self._unsent == 0 and not self._send_lock.locked()

    def probe(self) -> None:
        """EventSink: a transport that can ping (WebSocket) checks the peer is alive."""
        if self._probe is not None:
            self._probe()

    def _detach(self) -> None:
        if self.session is not None:
            self.session.detach(self)

    # --- outgoing -------------------------------------------------------------------
    #
    # Frames leave in the order they are produced. When nothing is queued or being
    # written, the producer (a handler, a sequencer) writes its frames itself: a hop
    # through the writer task costs a scheduler round, a large share of a one-shot
    # command's latency. Otherwise the frames join the bounded outbox, which the writer
    # drains, everything waiting in one write. Either way a slow peer blocks the
    # producer: backpressure reaches the sequencer, and from there the child.

    async def _writer(self) -> None:
        try:
            await self._write_outbox()
        finally:
            self._writer_done.set()

    async def _write_outbox(self) -> None:
        async with self._outbox_receive:
            async for frame, charged in self._outbox_receive:
                batch, size = [frame], _size(frame)
                while size < WRITE_BATCH_BYTES:
                    try:
                        frame, more = self._outbox_receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):  # EndOfChannel: closing
                        break
                    batch.append(frame)
                    size += _size(frame)
                    charged += more
                async with self._send_lock:
                    try:
                        await self.transport.send_messages(batch)
                    except TransportClosed:
                        return
                    finally:
                        self._unsent -= len(batch)
                        del batch, frame
                        self._release(charged)

    async def _send_frames(self, frames: list[Frame], charged: int = 0) -> None:
        """Write ``frames``, or queue them. ``charged``: bytes the last one holds in
        the buffer budgets, given back once it is written (or never will be)."""
        try:
            if self._unsent == 0 and not self._send_lock.locked():
                self._send_lock.acquire_nowait()  # no yield between the check and this
                try:
                    await self.transport.send_messages(frames)
                finally:
                    self._send_lock.release()
                return
            for index, frame in enumerate(frames):
                item = (frame, charged if index == len(frames) - 1 else 0)
                self._unsent += 1
                try:
                    self._outbox_send.send_nowait(item)
                except trio.WouldBlock:
                    try:
                        await self._outbox_send.send(item)
                    except BaseException:
                        self._unsent -= 1
                        raise
                if item[1]:
                    charged = 0  # the writer gives it back
        except (TransportClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the connection is going away; a detached session retains state
        finally:
            self._release(charged)

    # --- buffer budgets ---------------------------------------------------------------

    def _charge(self, size: int) -> None:
        self.buffers.charge(size)
        self._shared_buffers.charge(size)

    def _release(self, size: int) -> None:
        size = min(size, self.buffers.used)
        self.buffers.release(size)
        self._shared_buffers.release(size)

    async def _wait_for_room(self) -> None:
        """Before reading a request: past either buffer budget, stop reading (the peer
        meets TCP backpressure) until replies are written and requests handled."""
        while self.buffers.full or self._shared_buffers.full:
            self.reader_waiting = True
            self._shared_buffers.waiting += 1  # counted in the daemon's state summary
            try:
                budget = self.buffers if self.buffers.full else self._shared_buffers
                await budget.wait_freed(counted=False)
            finally:
                self.reader_waiting = False
                self._shared_buffers.waiting -= 1

    async def _reserve_reply(self, size: int) -> None:
        """A handler about to produce a big result: wait until ``size`` bytes fit both
        budgets (or nothing is held), then hold them for its reply (``_answer``
        settles the hold to the encoded reply's size and gives it back once written)."""
        charge = _REPLY_CHARGE.get(None)
        if charge is None:
            return
        await reserve_both(self.buffers, self._shared_buffers, size)
        charge[0] += size

    async def _send(self, message: Any) -> None:
        await self._send_frames([self.codec.encode_pieces(message)])

    async def _send_error(
        self, request_id: wire.RequestId, code: int, message: str, data: Any = None
    ) -> None:
        # A message may quote an OS path that is not UTF-8 (surrogate escapes), which
        # neither JSON nor msgpack can carry: its undecodable bytes become U+FFFD.
        message = message.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        error = wire.ErrorObject(code=code, message=message, data=data)
        await self._send(wire.ErrorResponse(id=request_id, error=error))

    async def send_process_events(self, process_id: str, events: list[SeqEvent]) -> None:
        encode = self.codec.encode_pieces
        await self._send_frames([encode(_notification(process_id, event)) for event in events])

    # --- incoming -------------------------------------------------------------------

    async def _finish_replies(self) -> None:
        """The peer ended its input but still reads ours (stdio): answer every request
        it sent, then let the writer flush what is queued, before the connection ends."""
        while self._in_flight:
            await self._replied.wait()
        self._outbox_send.close()  # the writer drains what is queued, then ends
        await self._writer_done.wait()

    async def _read_loop(self, nursery: trio.Nursery) -> bool:
        """Read and dispatch until the input ends; True if the peer ended it cleanly
        and may still read replies, False if the connection is gone."""
        while True:
            await self._wait_for_room()
            try:
                data = await self.transport.receive_message()
            except InputEnded:
                return True
            except TransportClosed:
                return False
            # Held until its handler is done (the params hold its payload), or until
            # it is answered here.
            held = len(data)
            self._charge(held)
            try:
                handed = await self._take(data, nursery, held)
            finally:
                del data
                if not handed:
                    self._release(held)

    async def _take(
        self, data: bytes | bytearray | str, nursery: trio.Nursery, held: int
    ) -> bool:
        """Check, decode and dispatch one message: True if a handler task took it (and
        with it the ``held`` bytes)."""
        over_limit = _value_limit_error(self.codec, data, self._max_values)
        if over_limit is not None:
            await self._send_error(over_limit, wire.errors.INVALID_REQUEST, self._too_many_values)
            return False
        try:
            message = self.codec.decode_message(data)
        except wire.MalformedMessage as exc:
            await self._send_error(wire.errors.MALFORMED_ID, wire.errors.INVALID_REQUEST, str(exc))
            return False
        except RecursionError:
            await self._send_error(wire.errors.MALFORMED_ID, wire.errors.INVALID_REQUEST, _TOO_DEEP)
            return False
        self._received, before = clock(), self.session
        try:
            handed = await self._dispatch(message, nursery, held)
            if not handed and message.method is not None and message.id is not msgspec.UNSET:
                # Answered inline: only a successful initialize changes the session.
                success = self.session is not before
                self._metrics.request_answered_inline(message.method, success, self._received)
            return handed
        except Exception as exc:  # a bug must not take the connection down
            log.exception("internal error dispatching a message")
            if isinstance(message.id, int | str) and not isinstance(message.id, bool):
                await self._send_error(
                    message.id, wire.errors.INTERNAL_ERROR, f"internal error: {exc}"
                )
            return False

    async def _dispatch(
        self, message: wire.IncomingMessage, nursery: trio.Nursery, held: int = 0
    ) -> bool:
        """True if a handler task took the request (and its ``held`` bytes)."""
        if message.id is msgspec.UNSET:
            self._notification(message)
            return False
        request_id = message.id
        if request_id is None or message.method is None:
            if message.method is None and (len(message.result) or message.error is not None):
                log.debug("ignoring a response to id %r we never sent", request_id)
                return False
            await self._send_error(
                wire.errors.MALFORMED_ID if request_id is None else request_id,
                wire.errors.INVALID_REQUEST,
                "invalid request: a request needs an id and a method",
            )
            return False
        spec = wire.METHODS.get(message.method)
        if spec is None:
            await self._send_error(
                request_id, wire.errors.METHOD_NOT_FOUND, f"unknown method {message.method}"
            )
            return False
        try:
            if message.method != "initialize":
                self._check_handshake(spec)
            params: Any = self.codec.decode(message.params, spec.params)
            if message.method == "initialize":
                result = await self._initialize(params)
                await self._send(wire.Response(id=request_id, result=result))
                return False
        except wire.InvalidParams as exc:
            await self._send_error(request_id, wire.errors.INVALID_PARAMS, str(exc))
            return False
        except RpcError as exc:
            await self._send_error(request_id, exc.code, exc.message, exc.data)
            return False
        except RecursionError:
            await self._send_error(request_id, wire.errors.INVALID_PARAMS, "params nest too deeply")
            return False
        except (UnicodeDecodeError, msgspec.DecodeError) as exc:  # e.g. invalid UTF-8 in a string
            await self._send_error(request_id, wire.errors.INVALID_PARAMS, f"invalid params: {exc}")
            return False
        try:
            self._request_slots.acquire_nowait()  # a free slot costs no scheduler round
        except trio.WouldBlock:
            await self._request_slots.acquire()
        # Taken here, in wire order: requests for one process (or one file handle) act
        # in the order sent.
        turn = self._order.take(message.method, params)
        handler = self._handlers[message.method]
        if message.method == "process/start":
            registered = functools.partial(self._order.acted, turn)
            handler = functools.partial(self._process_start, registered=registered)
        elif message.method == "process/terminate":
            # What waits on a terminate (a start of the same id) goes on once it acted,
            # not once its reply is out (a full outbox could hold that).
            handler = functools.partial(self._process_terminate, acted=turn)
        parent = parent_of(self.codec, message.trace)  # the span's: None for a root
        self._in_flight += 1
        nursery.start_soon(
            self._handle,
            request_id,
            handler,
            params,
            turn,
            message.method,
            parent,
            held,
            self._received,
        )
        return True

    def _notification(self, message: wire.IncomingMessage) -> None:
        if message.method == wire.INITIALIZED and self.session is not None:
            self.initialized = True
        elif message.method == wire.PROCESS_ACK and self.initialized:
            self._process_ack(message)
        else:
            log.debug("ignoring notification %r", message.method)

    def _process_ack(self, message: wire.IncomingMessage) -> None:
        """A notification has no reply: a malformed or stale ack is ignored."""
        try:
            params = self.codec.decode(message.params, wire.ProcessAckParams)
        except (wire.InvalidParams, RecursionError, UnicodeDecodeError, msgspec.DecodeError):
            log.debug("ignoring a malformed process/ack")
            return
        session = self.session
        if session is None or session.attached is not self:
            return
        managed = session.get(params.process_id)
        if managed is not None and managed.sequencer is not None:
            managed.sequencer.ack(params.seq)

    def _check_handshake(self, spec: wire.MethodSpec) -> None:
        if self.session is None:
            raise RpcError.invalid_request(
                f"client must call initialize before using {spec.family} methods"
            )
        if not self.initialized:
            raise RpcError.invalid_request(
                f"client must send initialized before using {spec.family} methods"
            )

    async def _handle(
        self,
        request_id: wire.RequestId,
        handler: Handler,
        params: Any,
        turn: Turn,
        method: str,
        parent: Context | None,
        held: int = 0,
        received: float = 0.0,
    ) -> None:
        """Run one request, in its span; its slot is freed once the reply is queued (so
        replies waiting on a full outbox count against the limit too), and the request's
        ``held`` bytes once it is answered."""
        started, outcome = self._metrics.request_started(method, received), "disconnected"
        try:
            with request_span(self._tracer_provider, method, parent) as current:
                error = await self._answer(request_id, handler, params, turn)
                if error is not None:
                    _mark_error(current, error[0], error[1])
                    await self._send_error(request_id, *error)
                outcome = "success" if error is None else "error"
        finally:
            self._metrics.request_done(method, outcome, started)
            del params, handler  # the payload goes with them
            self._release(held)
            self._order.acted(turn)
            self._request_slots.release()
            self._in_flight -= 1
            replied, self._replied = self._replied, trio.Event()
            replied.set()

    async def _answer(
        self, request_id: wire.RequestId, handler: Handler, params: Any, turn: Turn
    ) -> tuple[int, str] | tuple[int, str, Any] | None:
        """Run the handler once its turn came and send its result; or return the error
        (code, message) to answer instead."""
        for earlier in turn.waits:
            await earlier.wait()
        charge = [0]  # what the handler reserved for its reply (``_reserve_reply``)
        _REPLY_CHARGE.set(charge)  # this task's own context
        try:
            try:
                result = await handler(params)
            except RpcError as exc:
                return exc.code, exc.message, exc.data
            except Exception as exc:  # a bug must not take the connection down
                log.exception("internal error in a handler")
                return wire.errors.INTERNAL_ERROR, f"internal error: {exc}"
            try:
                frame = self.codec.encode_pieces(wire.Response(id=request_id, result=result))
            except Exception as exc:  # a result the wire cannot carry: our bug
                log.exception("internal error encoding a result")
                message = f"internal error: the result cannot be encoded: {exc}"
                return wire.errors.INTERNAL_ERROR, message
            del result  # only the frame is held while it waits to be written
            size, limit = _size(frame), self._result_limit
            if size > limit:
                # The client would close the connection on it (1009), and one that
                # retries reads after a reconnect would ask again: a loop. Say so.
                return wire.errors.INVALID_REQUEST, (
                    f"the result is {size} bytes, over the {limit}-byte message limit; "
                    "ask for less"
                )
            if size >= _COUNTED_REPLY_BYTES or charge[0]:
                # Held until written: settle the reservation to the frame's size.
                if size > charge[0]:
                    self._charge(size - charge[0])
                else:
                    self._release(charge[0] - size)
                charge[0] = 0
                await self._send_frames([frame], size)
            else:
                await self._send_frames([frame])
            return None
        finally:
            self._release(charge[0])

    # --- big replies: room in the buffer budgets before they are produced ------------

    def _reserving(self, estimate: Callable[[Any], Awaitable[int]], handler: Handler) -> Handler:
        async def reserving(params: Any) -> Any:
            await self._reserve_reply(await estimate(params))
            return await handler(params)

        return reserving

    async def _read_file_reply(self, params: wire.FsReadFileParams) -> int:
        """At its peak a read holds the file about five times (the pieces read, their
        join, the base64 bytes, their text, the encoded reply): what its size at a stat
        says, up to fs/readFile's limit. A file that grows meanwhile is charged for the
        difference when its reply is encoded."""
        try:
            path = path_from_file_uri(params.path)
            follow = params.follow_symlinks
            stat = await trio.to_thread.run_sync(lambda: os.stat(path, follow_symlinks=follow))
            size = stat.st_size
        except (RpcError, OSError, ValueError):
            return _SMALL_REPLY_BYTES  # the handler answers the error
        return 5 * min(size, MAX_READ_FILE_BYTES) + _SMALL_REPLY_BYTES

    async def _read_block_reply(self, params: wire.FsReadBlockParams) -> int:
        return 3 * max(0, min(params.len, MAX_BLOCK_LEN)) + _SMALL_REPLY_BYTES

    async def _listing_reply(self, params: Any) -> int:
        return _LISTING_REPLY_BYTES

    # --- handshake ------------------------------------------------------------------

    async def _initialize(self, params: wire.InitializeParams) -> wire.InitializeResult:
        if self.session is not None:
            raise RpcError.invalid_request("initialize may only be sent once per connection")
        if params.resume_session_id:
            session = self.registry.resume(
                params.resume_session_id, self, acking=params.process_ack
            )
        else:
            session = await self.registry.create()
            session.attach(self, acking=params.process_ack)
        self.session = session
        bind_log_context(session=session.fingerprint)  # this connection's tasks' logs
        log.info("client %r attached to session %s", params.client_name, session.fingerprint)
        await self._sandbox.prepare()
        return wire.InitializeResult(
            session_id=session.id, environment_info=environment_info(self._sandbox.mechanisms())
        )

    def _check_attached(self) -> None:
        self._attached_session()

    def _attached_session(self) -> Session:
        session = self.session
        assert session is not None  # the reader loop checked the handshake
        if session.attached is not self:
            raise RpcError.invalid_request("session has been resumed by another connection")
        return session

    # --- environment ----------------------------------------------------------------

    async def _environment_info(self, params: wire.EmptyParams) -> wire.EnvironmentInfo:
        await self._sandbox.prepare()
        return environment_info(self._sandbox.mechanisms())

    async def _environment_status(self, params: wire.EmptyParams) -> dict[str, str]:
        # Not EnvironmentStatusResult(): its only field holds its default, and wire
        # structs omit defaults, which would put ``{}`` on the wire (PROTOCOL §7).
        return {"status": "ready"}

    # --- processes ------------------------------------------------------------------

    async def _process_start(
        self, params: wire.ProcessStartParams, registered: Callable[[], None] | None = None
    ) -> wire.ProcessStartResult:
        sandbox_type = await self._attached_session().start_process(params, registered=registered)
        return wire.ProcessStartResult(process_id=params.process_id, sandbox_type=sandbox_type)

    async def _process_read(self, params: wire.ProcessReadParams) -> wire.ProcessReadResult:
        session = self._attached_session()
        managed = session.running(params.process_id)
        assert managed.sequencer is not None
        after_seq = params.after_seq or 0
        if params.max_bytes is not None and params.max_bytes < 0:
            raise RpcError.invalid_params("maxBytes must not be negative")
        # Asking for what follows after_seq says everything up to it has arrived.
        managed.sequencer.ack(after_seq)
        wait_ms = params.wait_ms or 0
        if wait_ms > 0:
            deadline = trio.current_time() + wait_ms / 1000 if wait_ms < math.inf else math.inf
            await managed.sequencer.wait_readable(after_seq, deadline, self._check_attached)
        # Room for the reply before it is built: the chunks' copies, their encoding.
        retention = managed.sequencer.sequence.retention
        payload = retention.bytes
        if params.max_bytes is not None:
            payload = min(payload, params.max_bytes + READ_SIZE)
        await self._reserve_reply(3 * payload + 256 * len(retention) + _SMALL_REPLY_BYTES)
        result = managed.sequencer.sequence.read(after_seq, params.max_bytes)
        return wire.ProcessReadResult(
            chunks=[
                wire.ReadChunk(seq=c.seq, stream=c.stream, chunk=c.data) for c in result.chunks
            ],
            next_seq=result.next_seq,
            exited=result.exited,
            exit_code=result.exit_code,
            closed=result.closed,
            failure=None,
            sandbox_denied=result.sandbox_denied,
            earliest_retained_seq=result.earliest_retained_seq,
        )

    async def _process_write(self, params: wire.ProcessWriteParams) -> wire.ProcessWriteResult:
        if not params.write_id:
            raise RpcError.invalid_params("writeId must not be empty")
        session = self._attached_session()
        managed = session.get(params.process_id)
        if managed is None:
            return wire.ProcessWriteResult(status="unknownProcess")
        if managed.stdin is None:
            return wire.ProcessWriteResult(status="starting")
        status = await managed.stdin.write(params.write_id, params.chunk, params.close_stdin)
        return wire.ProcessWriteResult(status=status)

    async def _process_signal(self, params: wire.ProcessSignalParams) -> wire.EmptyResult:
        managed = self._attached_session().get(params.process_id)
        if managed is not None:
            await managed.send_signal(params.signal)
        return wire.EmptyResult()

    async def _process_terminate(
        self, params: wire.ProcessTerminateParams, acted: Turn | None = None
    ) -> wire.ProcessTerminateResult:
        try:
            running = self._attached_session().terminate(params.process_id)
        finally:
            if acted is not None:
                self._order.acted(acted)
        return wire.ProcessTerminateResult(running=running)

    async def _process_resize(self, params: wire.ProcessResizeParams) -> wire.EmptyResult:
        self._attached_session().running(params.process_id).resize(params.rows, params.cols)
        return wire.EmptyResult()
