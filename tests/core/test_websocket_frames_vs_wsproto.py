"""Our sans-IO frame parser against wsproto's frame layer, on the same byte streams.

Each example is a stream of frames written here by hand from RFC 6455 §5.2 (valid
streams: messages fragmented or not, pings and pongs between messages and between
fragments, a close at the end; then the same with one thing broken; then frames drawn
with no care for the rules; then plain random bytes), masked client-to-server or
unmasked server-to-client, cut at random points. Both parsers get the same pieces;
the messages, pings, pongs and the close they report must be equal, and so must the
close code each fails the connection with.

The only places where we differ from wsproto on purpose are in DIFFERENCES, applied
to wsproto (the oracle) rather than hidden in the comparison.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import example, given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import (
    CloseReason,
    Frame,
    FrameProtocol,
    Opcode,
    ParseFailed,
    XorMaskerSimple,
    _truncate_utf8,
)

from exec_runtime._core.websocket_frames import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    Close,
    Event,
    FrameParser,
    Message,
    NeedData,
    Ping,
    Pong,
    ProtocolError,
    client_frame,
    close_code_is_valid,
    close_payload,
    control_frame,
    server_frame_header,
)

DIFFERENCES = {
    "close code 1014": (
        "IANA registered 1014 (Bad Gateway) with 1012 and 1013; wsproto knows 1012 and "
        "1013 only and fails a close with 1014 as an unknown reserved code (1002). We "
        "accept it. The oracle below accepts it too."
    ),
    "message size limit": (
        "we fail a message bigger than max_message_size with 1009 as soon as a frame "
        "header says so; wsproto has no limit. The comparison runs with a limit no "
        "stream reaches; test_the_size_limit_is_ours_alone checks the difference."
    ),
    "a frame cut short": (
        "on a stream that ends inside a frame, either parser may fail that frame before "
        "the other: we check reserved bits, opcode, masking, continuation order and the "
        "size limit on the first two bytes, wsproto the masking only after the extended "
        "length and the continuation order after the first payload byte; wsproto checks "
        "a text frame's UTF-8 as bytes arrive, we once the frame (or fragment) is whole. "
        "On complete frames both fail at the same frame, before anything after it. So "
        "only for random bytes, which may end anywhere: if one side failed and the other "
        "waits inside a frame, the events so far must be the same."
    ),
}
"""Where we differ from wsproto on purpose, and why. Nothing else may differ."""

ACCEPTED_CODES_BEYOND_WSPROTO = frozenset({1014})
NO_LIMIT = 1 << 62


class Oracle(FrameProtocol):
    """wsproto's frame layer with DIFFERENCES["close code 1014"] applied."""

    def _process_close(self, frame: Frame) -> Frame:
        data = frame.payload
        assert isinstance(data, (bytes, bytearray))
        if len(data) >= 2 and struct.unpack("!H", data[:2])[0] in ACCEPTED_CODES_BEYOND_WSPROTO:
            # wsproto's own path for a code it knows: the reason must be UTF-8.
            try:
                reason = bytes(data[2:]).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ParseFailed(str(exc), CloseReason.INVALID_FRAME_PAYLOAD_DATA) from None
            code = struct.unpack("!H", data[:2])[0]
            return Frame(frame.opcode, (code, reason), frame.frame_finished, frame.message_finished)
        return super()._process_close(frame)


@dataclass
class Outcome:
    events: list[Event]
    error: int | None
    """The close code the parser failed the connection with, or None."""
    waiting_in_frame: bool = False
    """No error, and the stream ended inside a frame (or a fragmented message)."""


def ours(
    chunks: Sequence[bytes],
    *,
    client: bool,
    max_message_size: int = NO_LIMIT,
    read_into: bool = False,
) -> Outcome:
    """Feed ``chunks`` to our parser. With ``read_into``, a chunk that arrives while a
    big frame's buffer is offered is written into that buffer, as the shell's
    ``recv_into`` does, and only what is left goes through ``receive_data``."""
    parser = FrameParser(client=client, max_message_size=max_message_size)
    events: list[Event] = []
    try:
        for chunk in chunks:
            rest = chunk
            if read_into:
                view = parser.get_buffer()
                if view is not None:
                    with view:
                        count = min(len(view), len(rest))
                        view[:count] = rest[:count]
                    parser.buffer_updated(count)
                    rest = rest[count:]
            if rest:
                parser.receive_data(rest)
            while not isinstance(event := parser.next_event(), NeedData):
                assert isinstance(event, (Message, Ping, Pong, Close)), event
                if isinstance(event, Message):
                    event = Message(event.opcode, bytes(event.payload))
                events.append(event)
                if isinstance(event, Close):
                    assert parser.next_event() == event  # the close is final
                    return Outcome(events, None)
    except ProtocolError as exc:
        try:
            parser.next_event()
        except ProtocolError as again:
            assert again is exc  # the error is final
        else:
            raise AssertionError("the parser went on after an error") from None
        return Outcome(events, exc.code)
    return Outcome(events, None, parser.in_message)


def wsproto_outcome(chunks: Sequence[bytes], *, client: bool) -> Outcome:
    protocol = Oracle(client=client, extensions=[])
    events: list[Event] = []
    pieces: list[bytes | str] = []
    in_frame = False
    try:
        for chunk in chunks:
            protocol.receive_bytes(chunk)
            for frame in protocol.received_frames():
                if frame.opcode is Opcode.PING:
                    assert isinstance(frame.payload, bytes)
                    events.append(Ping(frame.payload))
                elif frame.opcode is Opcode.PONG:
                    assert isinstance(frame.payload, bytes)
                    events.append(Pong(frame.payload))
                elif frame.opcode is Opcode.CLOSE:
                    assert isinstance(frame.payload, tuple)
                    code, reason = frame.payload
                    events.append(Close(int(code), reason))
                    return Outcome(events, None)
                else:
                    assert isinstance(frame.payload, (bytes, str))
                    pieces.append(frame.payload)
                    in_frame = not frame.message_finished
                    if frame.message_finished:
                        if frame.opcode is Opcode.TEXT:
                            text = "".join(p for p in pieces if isinstance(p, str))
                            events.append(Message(TEXT, text.encode()))
                        else:
                            data = b"".join(p for p in pieces if isinstance(p, bytes))
                            events.append(Message(BINARY, data))
                        pieces = []
    except ParseFailed as exc:
        return Outcome(events, int(exc.code))
    buffered = len(protocol._frame_decoder.buffer) > 0  # wsproto's own state
    header = protocol._frame_decoder.header is not None
    return Outcome(events, None, in_frame or buffered or header)


def same_outcome(a: Outcome, b: Outcome, *, cut_short: bool) -> bool:
    if a.events != b.events:
        return False
    if a.error == b.error:
        return True
    # DIFFERENCES["a frame cut short"]
    return cut_short and (
        (a.error is None and a.waiting_in_frame) or (b.error is None and b.waiting_in_frame)
    )


@dataclass
class Cuts:
    """Where a stream is cut into reads: at fractions of its length, at a few early
    offsets (inside the first headers), and maybe every ``stride`` bytes of the first
    400 (through the first frames' headers)."""

    fractions: list[float]
    offsets: list[int]
    stride: int

    def points(self, length: int) -> list[int]:
        found = {int(f * length) for f in self.fractions} | set(self.offsets)
        if self.stride:
            found |= set(range(0, min(length, 400), self.stride))
        return sorted(c for c in found if 0 < c < length)


cuts = st.builds(
    Cuts,
    st.lists(st.floats(0, 1), max_size=8),
    st.lists(st.integers(0, 40), max_size=4),
    st.sampled_from([0, 0, 0, 1, 3]),
)


def check(
    wire: bytes, cuts: Cuts, *, client: bool, read_into: bool = False, cut_short: bool = False
) -> Outcome:
    """Compare on ``wire`` cut at ``cuts``; ``cut_short`` if it may end inside a frame."""
    points = cuts.points(len(wire))
    chunks = [wire[i:j] for i, j in zip([0, *points], [*points, len(wire)], strict=True)]
    if not wire:
        chunks = []
    mine = ours(chunks, client=client, read_into=read_into)
    theirs = wsproto_outcome(chunks, client=client)
    assert same_outcome(mine, theirs, cut_short=cut_short), (mine, theirs)
    # However the bytes are cut, our answer is the same as for one piece.
    whole = ours([wire] if wire else [], client=client)
    assert (whole.events, whole.error) == (mine.events, mine.error)
    return mine


# --- frames, written from RFC 6455 §5.2 -----------------------------------------------


@dataclass
class Spec:
    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0
    length_form: str = "shortest"
    """"shortest", "16" or "64" (forced, maybe longer than needed), or "64-msb"."""
    flip_mask: bool = False
    key: bytes = b"\x9a\x10\x7f\xe3"

    def __repr__(self) -> str:
        payload = self.payload if len(self.payload) <= 60 else self.payload[:20]
        more = "" if payload is self.payload else f" + {len(self.payload) - 20} more bytes"
        return (
            f"Spec({self.opcode:#x}, {payload!r}{more}, fin={self.fin}, rsv={self.rsv:#x}, "
            f"length_form={self.length_form!r}, flip_mask={self.flip_mask}, key={self.key!r})"
        )

    def encode(self, *, masked: bool) -> bytes:
        masked ^= self.flip_mask
        length = len(self.payload)
        first = (0x80 if self.fin else 0) | self.rsv | self.opcode
        bit = 0x80 if masked else 0
        form = self.length_form
        if form == "shortest":
            form = "7" if length < 126 else "16" if length < 65536 else "64"
        elif form == "16" and length >= 65536:
            form = "64"  # 16 bits cannot hold it
        if form == "7":
            header = bytes([first, bit | length])
        elif form == "16":
            header = bytes([first, bit | 126]) + struct.pack("!H", length)
        else:
            declared = length | (1 << 63 if form == "64-msb" else 0)
            header = bytes([first, bit | 127]) + struct.pack("!Q", declared)
        if not masked:
            return header + self.payload
        # wsproto's masker (bytes.translate per key byte): fast, and not ours.
        return header + self.key + bytes(XorMaskerSimple(self.key).process(bytearray(self.payload)))


def encode(specs: Sequence[Spec], *, masked: bool) -> bytes:
    return b"".join(spec.encode(masked=masked) for spec in specs)


INTERESTING_CODES = [
    *(0, 1, 999, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011),
    *(1012, 1013, 1014, 1015, 1016, 1100, 2000, 2999, 3000, 3999, 4000, 4999, 5000, 65535),
]

keys = st.binary(min_size=4, max_size=4)
texts = st.text(max_size=40).map(str.encode)
big = st.builds(
    lambda size, byte: bytes([byte]) * size,
    st.sampled_from([65536, 70_000, 140_000]),
    st.integers(0x20, 0x7E),
)
payloads = st.one_of(st.binary(max_size=300), texts, big)
control_payloads = st.binary(max_size=125)
reasons = st.one_of(st.text(max_size=40).map(str.encode), st.binary(max_size=20))
close_payloads = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=1),
    st.builds(
        lambda code, reason: struct.pack("!H", code) + reason[:123],
        st.one_of(st.sampled_from(INTERESTING_CODES), st.integers(0, 65535)),
        reasons,
    ),
)
valid_close_payloads = st.one_of(
    st.just(b""),
    st.builds(
        lambda code, reason: struct.pack("!H", code) + reason.encode()[:40],
        st.sampled_from([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013]),
        st.text(max_size=10),
    ),
)


@st.composite
def valid_streams(draw: st.DrawFn) -> list[Spec]:
    """Messages, each in one frame or fragmented anywhere (even inside a character),
    with pings and pongs between them and between fragments; maybe a close."""
    specs: list[Spec] = []

    def controls() -> None:
        for opcode, payload in draw(
            st.lists(st.tuples(st.sampled_from([PING, PONG]), control_payloads), max_size=2)
        ):
            specs.append(Spec(opcode, payload, key=draw(keys)))

    for _ in range(draw(st.integers(0, 4))):
        controls()
        opcode = draw(st.sampled_from([TEXT, BINARY]))
        payload = draw(texts if opcode == TEXT else payloads)
        if opcode == TEXT and draw(st.booleans()):
            payload = draw(big)
        cuts = sorted(set(draw(st.lists(st.integers(0, len(payload)), max_size=3))))
        bounds = [0, *cuts, len(payload)]
        pieces = [payload[i:j] for i, j in itertools.pairwise(bounds)]
        for index, piece in enumerate(pieces):
            if index:
                controls()
            first = CONTINUATION if index else opcode
            last = index == len(pieces) - 1
            specs.append(Spec(first, piece, fin=last, key=draw(keys)))
    controls()
    if draw(st.booleans()):
        specs.append(Spec(CLOSE, draw(valid_close_payloads), key=draw(keys)))
    return specs


@st.composite
def broken_streams(draw: st.DrawFn) -> list[Spec]:
    """A valid stream with one thing broken."""
    specs = draw(valid_streams())
    at = draw(st.integers(0, len(specs)))
    key = draw(keys)
    kind = draw(
        st.sampled_from(
            [
                "rsv",
                "opcode",
                "mask",
                "fragmented control",
                "long control",
                "length form",
                "close",
                "bad text",
                "continuation",
                "unfinished message",
            ]
        )
    )
    target = specs[at] if at < len(specs) else None
    # Where a whole message may go: not inside a fragmented one.
    boundaries, open_message = [], False
    for index, spec in enumerate(specs):
        if not open_message:
            boundaries.append(index)
        if spec.opcode in (TEXT, BINARY, CONTINUATION):
            open_message = not spec.fin
    boundaries.append(len(specs))
    between = draw(st.sampled_from(boundaries))
    if kind == "rsv" and target:
        target.rsv = draw(st.sampled_from([0x10, 0x20, 0x40, 0x70]))
    elif kind == "opcode" and target:
        target.opcode = draw(st.sampled_from([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]))
    elif kind == "mask" and target:
        target.flip_mask = True
    elif kind == "fragmented control":
        specs.insert(at, Spec(draw(st.sampled_from([PING, PONG, CLOSE])), b"", fin=False))
    elif kind == "long control":
        opcode = draw(st.sampled_from([PING, PONG, CLOSE]))
        payload = b"\x03\xe8" + draw(st.binary(min_size=124, max_size=300))
        specs.insert(at, Spec(opcode, payload, key=key))
    elif kind == "length form" and target:
        target.length_form = draw(st.sampled_from(["16", "64", "64-msb"]))
    elif kind == "close":
        specs.insert(at, Spec(CLOSE, draw(close_payloads), key=key))
    elif kind == "bad text":
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]))
        good = draw(texts)
        where = draw(st.integers(0, len(good)))
        payload = good[:where] + bad + good[where:]
        if draw(st.booleans()):
            specs.insert(between, Spec(TEXT, payload, key=key))
        else:
            cut = draw(st.integers(0, len(payload)))
            specs[between:between] = [
                Spec(TEXT, payload[:cut], fin=False, key=key),
                Spec(PING, b"between", key=key),
                Spec(CONTINUATION, payload[cut:], key=key),
            ]
    elif kind == "continuation":
        specs.insert(at, Spec(CONTINUATION, draw(payloads), fin=draw(st.booleans()), key=key))
    else:  # a new message starts before the last one ended
        specs.insert(at, Spec(draw(st.sampled_from([TEXT, BINARY])), b"abc", fin=False, key=key))
        specs.insert(at + 1, Spec(BINARY, b"def", key=key))
    return specs


any_specs = st.builds(
    Spec,
    opcode=st.one_of(
        st.sampled_from([CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG]), st.integers(0, 15)
    ),
    payload=st.one_of(st.binary(max_size=140), texts, close_payloads),
    fin=st.booleans(),
    rsv=st.sampled_from([0, 0, 0, 0, 0x10, 0x40]),
    length_form=st.sampled_from(["shortest"] * 8 + ["16", "64"]),
    flip_mask=st.sampled_from([False] * 9 + [True]),
    key=keys,
)
"""A frame drawn with no care for the rules (masked the right way nine times in ten,
so it gets past that check often enough to reach the others)."""

NO_CUTS = Cuts([], [], 0)
MORE_EXAMPLES = settings(max_examples=3 * settings().max_examples)
"""The differential tests get three times the profile's examples (they run in seconds)."""


@MORE_EXAMPLES
@given(specs=broken_streams(), cuts=cuts, client=st.booleans(), read_into=st.booleans())
def test_broken_streams_fail_as_wsproto_fails(
    specs: list[Spec], cuts: Cuts, client: bool, read_into: bool
) -> None:
    # The client receives the server's frames (unmasked); the server the client's.
    check(encode(specs, masked=not client), cuts, client=client, read_into=read_into)


@MORE_EXAMPLES
@given(specs=st.lists(any_specs, max_size=8), cuts=cuts, client=st.booleans())
def test_frames_drawn_without_rules(specs: list[Spec], cuts: Cuts, client: bool) -> None:
    check(encode(specs, masked=not client), cuts, client=client, read_into=True)


@MORE_EXAMPLES
@given(specs=valid_streams(), cuts=cuts, client=st.booleans(), read_into=st.booleans())
def test_valid_streams_give_what_wsproto_gives(
    specs: list[Spec], cuts: Cuts, client: bool, read_into: bool
) -> None:
    outcome = check(encode(specs, masked=not client), cuts, client=client, read_into=read_into)
    assert outcome.error is None
    expected = [s for s in specs if s.opcode in (PING, PONG, CLOSE)]
    assert len([e for e in outcome.events if not isinstance(e, Message)]) == len(expected)


@MORE_EXAMPLES
@given(wire=st.binary(max_size=400), cuts=cuts, client=st.booleans())
@example(wire=b"\x88\x02\x03\xee", cuts=NO_CUTS, client=True)  # close 1006
@example(wire=b"\x88\x01\x03", cuts=NO_CUTS, client=True)  # a 1-byte close payload
@example(wire=b"\x88\x04\x03\xe8\xc3\x28", cuts=NO_CUTS, client=True)  # reason not UTF-8
def test_random_bytes(wire: bytes, cuts: Cuts, client: bool) -> None:
    check(wire, cuts, client=client, cut_short=True)


# --- what we send, parsed by wsproto ----------------------------------------------------


@given(
    payload=st.one_of(st.binary(max_size=300), big),
    opcode=st.sampled_from([TEXT, BINARY]),
    client=st.booleans(),
)
def test_wsproto_reads_what_we_send(payload: bytes, opcode: int, client: bool) -> None:
    if opcode == TEXT:
        payload = payload.decode(errors="replace").encode()
    if client:  # we are the client: our masked frame goes to wsproto's server end
        wire = client_frame(opcode, payload)
    else:
        wire = server_frame_header(opcode, len(payload)) + payload
    assert wsproto_outcome([wire], client=not client) == Outcome([Message(opcode, payload)], None)


@given(
    code=st.sampled_from([c for c in INTERESTING_CODES if close_code_is_valid(c)]),
    reason=st.text(max_size=200),
    client=st.booleans(),
)
def test_wsproto_reads_our_close_frames(code: int, reason: str, client: bool) -> None:
    wire = control_frame(CLOSE, close_payload(code, reason), client=client)
    (close,) = wsproto_outcome([wire], client=not client).events
    assert isinstance(close, Close) and close.code == code
    assert reason.startswith(close.reason) and len(close.reason.encode()) <= 123
    # wsproto cuts a reason the same way (for the 125 bytes of a control frame).
    assert close.reason.encode() == _truncate_utf8(reason.encode(), 123)


@given(specs=valid_streams(), client=st.booleans())
def test_the_size_limit_is_ours_alone(specs: list[Spec], client: bool) -> None:
    """DIFFERENCES["message size limit"]: under a limit, the messages up to the first one
    past it are wsproto's, and then we fail with 1009."""
    wire = encode(specs, masked=not client)
    theirs = wsproto_outcome([wire], client=client)
    sizes = [len(e.payload) for e in theirs.events if isinstance(e, Message)]
    if not sizes:
        return
    limit = max(sizes) - 1
    mine = ours([wire], client=client, max_message_size=limit)
    assert mine.error == 1009
    first_big = next(
        i for i, e in enumerate(theirs.events) if isinstance(e, Message) and len(e.payload) > limit
    )
    # A fragmented message fails at the fragment that crosses the limit, so we may have
    # reported fewer of the pings that came between its fragments.
    assert mine.events == theirs.events[: len(mine.events)]
    assert len(mine.events) <= first_big
    assert [e for e in mine.events if isinstance(e, Message)] == [
        e for e in theirs.events[:first_big] if isinstance(e, Message)
    ]
