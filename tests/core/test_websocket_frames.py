"""The sans-IO frame parser and serializers, rule by rule: RFC 6455 §7.4 for close
frames, §8.1 for text, §5 for framing. (The differential test against wsproto is in
test_websocket_frames_vs_wsproto.py.)"""

from __future__ import annotations

import contextlib
import itertools
import struct
import tracemalloc
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exec_runtime._core.websocket_frames import (
    BINARY,
    CLOSE,
    CONTINUATION,
    DIRECT_RECEIVE_BYTES,
    DIRECT_RECEIVE_MAX,
    MAX_CLOSE_REASON_BYTES,
    NEED_DATA,
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
    mask,
    server_frame_header,
    truncate_utf8,
)


def server_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """An unmasked frame, written here from RFC 6455 §5.2 (not with the serializer)."""
    first = (0x80 if fin else 0) | opcode
    if len(payload) < 126:
        return bytes([first, len(payload)]) + payload
    if len(payload) < 65536:
        return bytes([first, 126]) + struct.pack("!H", len(payload)) + payload
    return bytes([first, 127]) + struct.pack("!Q", len(payload)) + payload


def events(wire: bytes, *, client: bool = True, limit: int = 1 << 30) -> list[Event | int]:
    """Every event from ``wire`` fed in one piece; a failure ends the list with its code."""
    parser = FrameParser(client=client, max_message_size=limit)
    parser.receive_data(wire)
    found: list[Event | int] = []
    try:
        while not isinstance(event := parser.next_event(), NeedData):
            assert isinstance(event, (Message, Ping, Pong, Close)), event
            found.append(event)
            if isinstance(event, Close):
                break
    except ProtocolError as exc:
        found.append(exc.code)
    return found


def equal(found: object, expected: object) -> bool:
    """``found == expected``, for big payloads: pytest's own explanation of an ``==``
    that fails diffs the two reprs, which takes minutes for a megabyte (CI sets no limit
    on it), where the reprs of a call's arguments are cut short."""
    return found == expected


def peer_close(payload: bytes) -> list[Event | int]:
    return events(server_frame(CLOSE, payload))


# --- RFC 6455 §7.4: close codes and reasons -------------------------------------------


@pytest.mark.parametrize("code", [1005, 1006, 1015])
def test_a_close_with_a_code_that_is_only_for_reporting_fails_with_1002(code: int) -> None:
    assert peer_close(struct.pack("!H", code)) == [1002]


@pytest.mark.parametrize("code", [0, 1, 999, 1004, 1016, 1100, 2000, 2999, 5000, 65535])
def test_a_close_with_a_reserved_or_invalid_code_fails_with_1002(code: int) -> None:
    assert peer_close(struct.pack("!H", code) + b"bye") == [1002]


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]
)
def test_a_close_with_a_valid_code_is_reported_with_its_reason(code: int) -> None:
    assert peer_close(struct.pack("!H", code) + "bye \u00e9".encode()) == [
        Close(code, "bye \u00e9")
    ]


def test_a_close_without_a_payload_reports_1005() -> None:
    assert peer_close(b"") == [Close(1005, "")]


def test_a_close_with_a_one_byte_payload_fails_with_1002() -> None:
    assert peer_close(b"\x03") == [1002]


@pytest.mark.parametrize("reason", [b"\xff", b"ok \xc3", b"\xed\xa0\x80", b"\xc0\xaf"])
def test_a_close_reason_that_is_not_utf8_fails_with_1007(reason: bytes) -> None:
    assert peer_close(struct.pack("!H", 1000) + reason) == [1007]


def test_close_code_validity_over_the_whole_range() -> None:
    valid = [code for code in range(70_000) if close_code_is_valid(code)]
    assert valid == [*range(1000, 1004), *range(1007, 1015), *range(3000, 5000)]


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2000, 5000])
def test_a_close_code_that_may_not_be_sent_is_refused(code: int) -> None:
    with pytest.raises(ValueError, match=str(code)):
        close_payload(code)


def test_a_long_reason_is_cut_between_characters_to_fit_123_bytes() -> None:
    reason = "\u00e9" * 100  # 200 bytes: byte 123 is the middle of an é
    payload = close_payload(1001, reason)
    assert len(payload) == 2 + 122 <= MAX_CLOSE_REASON_BYTES + 2
    assert payload[2:].decode() == "\u00e9" * 61
    # ... and what we send is what a peer (our own parser) accepts.
    assert events(server_frame(CLOSE, payload)) == [Close(1001, "\u00e9" * 61)]
    assert close_payload(1000, "a" + reason)[2:].decode() == "a" + "\u00e9" * 61  # 123 fits
    exact = "x" * 123
    assert close_payload(1000, exact)[2:] == exact.encode()
    assert close_payload(1000, exact + "y") == close_payload(1000, exact)


@given(st.text(), st.integers(0, 130))
def test_truncate_utf8_keeps_the_longest_whole_prefix(text: str, limit: int) -> None:
    data = text.encode()
    cut = truncate_utf8(data, limit)
    assert len(cut) <= limit
    assert data.startswith(cut)
    assert text.startswith(cut.decode())  # never half a character
    rest = data[len(cut) :].decode()
    assert not rest or len(cut) + len(rest[0].encode()) > limit  # and not shorter than needed


# --- RFC 6455 §8.1 / §5.6: text is UTF-8 ----------------------------------------------


@pytest.mark.parametrize("payload", [b"\xff", b"caf\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])
def test_a_text_message_that_is_not_utf8_fails_with_1007(payload: bytes) -> None:
    assert events(server_frame(TEXT, payload)) == [1007]
    assert events(server_frame(BINARY, payload)) == [Message(BINARY, payload)]


def test_a_character_split_across_fragments_is_valid_text() -> None:
    euro = "\u20ac".encode()
    wire = (
        server_frame(TEXT, b"a" + euro[:1], fin=False)
        + server_frame(PING, b"p")
        + server_frame(CONTINUATION, euro[1:2], fin=False)
        + server_frame(CONTINUATION, euro[2:])
    )
    assert events(wire) == [Ping(b"p"), Message(TEXT, b"a" + euro)]


def test_bad_text_fails_at_its_fragment_before_later_control_frames() -> None:
    wire = (
        server_frame(TEXT, b"ok", fin=False)
        + server_frame(CONTINUATION, b"\xff", fin=False)
        + server_frame(PING, b"after")
        + server_frame(CONTINUATION, b"end")
    )
    assert events(wire) == [1007]


def test_a_text_message_cut_inside_a_character_fails_at_its_end() -> None:
    wire = server_frame(TEXT, b"a\xe2\x82", fin=False) + server_frame(CONTINUATION, b"")
    assert events(wire) == [1007]


# --- framing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "client"),
    [
        (server_frame(BINARY, b"x"), False),  # a client frame not masked
        (client_frame(BINARY, b"x"), True),  # a server frame masked
        (bytes([0x80 | 0x40 | BINARY, 1]) + b"x", True),  # RSV1 without an extension
        (server_frame(0x3, b"x"), True),  # a reserved data opcode
        (server_frame(0xB, b"x"), True),  # a reserved control opcode
        (server_frame(PING, b"x", fin=False), True),  # a fragmented control frame
        (server_frame(PONG, b"x" * 126), True),  # a control frame past 125 bytes
        (server_frame(CONTINUATION, b"x"), True),  # a continuation of nothing
        (server_frame(TEXT, b"a", fin=False) + server_frame(TEXT, b"b"), True),
        (bytes([0x82, 126, 0, 5]) + b"hello", True),  # 16-bit length for 5 bytes
        (bytes([0x82, 127]) + struct.pack("!Q", 200) + b"x" * 200, True),  # 64-bit for 200
        (bytes([0x82, 127]) + struct.pack("!Q", 1 << 63 | 70_000), True),  # top bit set
    ],
)
def test_a_protocol_violation_fails_with_1002(wire: bytes, client: bool) -> None:
    assert events(wire, client=client) == [1002]


def test_a_message_past_the_limit_fails_with_1009_at_the_header() -> None:
    assert events(bytes([0x82, 127]) + struct.pack("!Q", 1 << 40), limit=1000) == [1009]
    fragmented = server_frame(BINARY, b"x" * 600, fin=False) + server_frame(
        CONTINUATION, b"y" * 401
    )
    assert events(fragmented, limit=1000) == [1009]
    assert events(server_frame(BINARY, b"x" * 1000), limit=1000) == [Message(BINARY, b"x" * 1000)]


def test_errors_and_closes_are_final() -> None:
    parser = FrameParser(client=True, max_message_size=1000)
    parser.receive_data(server_frame(CLOSE, struct.pack("!H", 1000)) + server_frame(TEXT, b"x"))
    assert parser.next_event() == Close(1000)
    parser.receive_data(server_frame(TEXT, b"late"))
    assert parser.next_event() == Close(1000)
    parser = FrameParser(client=True, max_message_size=1000)
    parser.receive_data(server_frame(0x3, b""))
    with pytest.raises(ProtocolError) as first:
        parser.next_event()
    parser.receive_data(server_frame(TEXT, b"x"))
    with pytest.raises(ProtocolError) as second:
        parser.next_event()
    assert first.value is second.value and first.value.code == 1002


def test_one_read_holding_one_frame_is_not_copied() -> None:
    wire = server_frame(BINARY, b"")  # the payload is a slice of the read: empty here
    parser = FrameParser(client=True, max_message_size=100)
    parser.receive_data(wire + server_frame(BINARY, b"abc"))
    assert parser.next_event() == Message(BINARY, b"")
    assert parser.next_event() == Message(BINARY, b"abc")
    assert parser.next_event() is NEED_DATA


@pytest.mark.parametrize("size", [DIRECT_RECEIVE_BYTES, 200_000, DIRECT_RECEIVE_MAX])
@pytest.mark.parametrize("client", [True, False])
def test_a_big_frame_is_read_straight_into_its_own_buffer(size: int, client: bool) -> None:
    payload = bytes(range(256)) * (size // 256)
    key = b"\x01\x02\x03\x04"
    wire = client_frame(BINARY, payload, key) if not client else server_frame(BINARY, payload)
    wire += server_frame(TEXT, b"next") if client else client_frame(TEXT, b"next", key)
    parser = FrameParser(client=client, max_message_size=1 << 21)
    assert parser.get_buffer() is None
    parser.receive_data(wire[:1000])
    assert parser.next_event() is NEED_DATA
    position = 1000
    while (view := parser.get_buffer()) is not None:
        with view:
            count = min(len(view), 50_000)
            view[:count] = wire[position : position + count]
        parser.buffer_updated(count)
        position += count
        if parser.get_buffer() is not None:
            assert parser.next_event() is NEED_DATA
    assert equal(parser.next_event(), Message(BINARY, payload))
    parser.receive_data(wire[position:])
    assert parser.next_event() == Message(TEXT, b"next")


def test_bytes_fed_while_a_big_frame_buffer_is_open_fill_it_first() -> None:
    payload = b"z" * 100_000
    wire = server_frame(BINARY, payload) + server_frame(PING, b"p")
    parser = FrameParser(client=True, max_message_size=1 << 20)
    parser.receive_data(wire[:10])
    assert parser.next_event() is NEED_DATA
    assert parser.get_buffer() is not None
    parser.receive_data(wire[10:])  # the rest of the frame and the ping, in one piece
    assert parser.get_buffer() is None
    assert equal(parser.next_event(), Message(BINARY, payload))
    assert parser.next_event() == Ping(b"p")
    with pytest.raises(ValueError):
        parser.buffer_updated(1)


def test_a_huge_frame_grows_with_its_bytes() -> None:
    """Past DIRECT_RECEIVE_MAX nothing is reserved from the header alone."""
    payload = b"h" * (DIRECT_RECEIVE_MAX + 10)
    wire = server_frame(BINARY, payload)
    parser = FrameParser(client=True, max_message_size=1 << 22)
    parser.receive_data(wire[:100])
    assert parser.next_event() is NEED_DATA
    assert parser.get_buffer() is None
    for at in range(100, len(wire), 300_000):
        parser.receive_data(wire[at : at + 300_000])
    assert equal(parser.next_event(), Message(BINARY, payload))


def test_a_caller_bytearray_is_not_modified() -> None:
    data = bytearray(server_frame(BINARY, b"abc") + server_frame(BINARY, b"de")[:2])
    before = bytes(data)
    parser = FrameParser(client=True, max_message_size=100)
    parser.receive_data(data)
    assert parser.next_event() == Message(BINARY, b"abc")
    assert parser.next_event() is NEED_DATA
    parser.receive_data(b"de")
    assert parser.next_event() == Message(BINARY, b"de")
    assert data == before


# --- serializers ----------------------------------------------------------------------


@given(st.binary(max_size=70_000), st.sampled_from([TEXT, BINARY]))
def test_what_each_end_sends_the_other_parses(payload: bytes, opcode: int) -> None:
    if opcode == TEXT:
        payload = payload.decode(errors="replace").encode()
    to_server = FrameParser(client=False, max_message_size=1 << 20)
    to_server.receive_data(client_frame(opcode, payload))
    assert equal(to_server.next_event(), Message(opcode, payload))
    to_client = FrameParser(client=True, max_message_size=1 << 20)
    to_client.receive_data(server_frame_header(opcode, len(payload)) + payload)
    assert equal(to_client.next_event(), Message(opcode, payload))


def test_control_frames() -> None:
    assert events(control_frame(PING, b"hi", client=False)) == [Ping(b"hi")]
    assert events(control_frame(PONG, b"", client=True), client=False) == [Pong(b"")]
    closing = control_frame(CLOSE, close_payload(1000, "done"), client=True)
    assert events(closing, client=False) == [Close(1000, "done")]
    with pytest.raises(ValueError):
        control_frame(PING, b"x" * 126, client=False)


@given(payload=st.binary(max_size=5000), key=st.binary(min_size=4, max_size=4))
def test_mask_is_the_rfc_xor_and_its_own_inverse(payload: bytes, key: bytes) -> None:
    expected = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert mask(payload, key) == expected
    assert mask(mask(payload, key), key) == payload


# --- the parser, detail by detail -----------------------------------------------------


def failure(wire: bytes, *, client: bool = True, limit: int = 1 << 30) -> tuple[int, str]:
    """The code and message ``wire`` (fed whole) fails the connection with."""
    parser = FrameParser(client=client, max_message_size=limit)
    parser.receive_data(wire)
    with pytest.raises(ProtocolError) as caught:
        while not isinstance(parser.next_event(), NeedData):
            pass
    return caught.value.code, str(caught.value)


@pytest.mark.parametrize(
    ("wire", "client", "code", "message"),
    [
        (bytes([0x80 | 0x10 | TEXT, 0]), True, 1002, "reserved bits set: no extension was agreed"),
        (server_frame(0x3, b"x"), True, 1002, "unknown opcode 0x3"),
        (server_frame(0xB, b"x"), True, 1002, "unknown opcode 0xb"),
        (server_frame(PING, b"x", fin=False), True, 1002, "a control frame is fragmented"),
        (server_frame(PONG, b"x" * 126), True, 1002, "a control frame is longer than 125"),
        (client_frame(BINARY, b"x"), True, 1002, "the server sent a masked frame"),
        (server_frame(BINARY, b"x"), False, 1002, "a client frame is not masked"),
        (server_frame(CONTINUATION, b"x"), True, 1002, "a continuation frame starts nothing"),
        (
            server_frame(BINARY, b"a", fin=False) + server_frame(TEXT, b"b"),
            True,
            1002,
            "a new message inside a fragmented one",
        ),
        (bytes([0x82, 126, 0, 125]), True, 1002, "a length not in its shortest form"),
        (
            bytes([0x82, 127]) + struct.pack("!Q", 65535),
            True,
            1002,
            "a length not in its shortest form",
        ),
        (
            bytes([0x82, 127]) + struct.pack("!Q", 1 << 63),
            True,
            1002,
            "a length not in its shortest form",
        ),
        (server_frame(BINARY, b"x" * 1001), True, 1009, "message larger than 1000"),
        (server_frame(TEXT, b"\xff"), True, 1007, "a text message is not valid UTF-8"),
        (
            server_frame(TEXT, b"ok", fin=False) + server_frame(CONTINUATION, b"\xff"),
            True,
            1007,
            "a text message is not valid UTF-8",
        ),
        (server_frame(CLOSE, b"\x03"), True, 1002, "a close frame with a 1-byte payload"),
        (server_frame(CLOSE, struct.pack("!H", 1005)), True, 1002, "a close frame with code 1005"),
        (server_frame(CLOSE, b"\xff\xff"), True, 1002, "a close frame with code 65535"),
        (server_frame(CLOSE, b"\x80\x00"), True, 1002, "a close frame with code 32768"),
        (
            server_frame(CLOSE, struct.pack("!H", 1000) + b"\xff"),
            True,
            1007,
            "a close frame's reason is not valid UTF-8",
        ),
    ],
)
def test_each_violation_fails_with_its_code_and_message(
    wire: bytes, client: bool, code: int, message: str
) -> None:
    assert failure(wire, client=client, limit=1000) == (code, message)


@pytest.mark.parametrize(
    ("wire", "header", "client", "code"),
    [
        (bytes([0x80 | 0x20 | BINARY, 5]) + b"hello", 2, True, 1002),  # RSV2
        (server_frame(PING, b"x" * 126), 2, True, 1002),  # a 16-bit length for a ping
        (bytes([0x82, 126, 0, 5]) + b"hello", 4, True, 1002),  # 16-bit length for 5 bytes
        (server_frame(BINARY, b"x" * 300), 4, True, 1009),  # past the limit of 200
        (bytes([0x82, 127]) + struct.pack("!Q", 65535) + b"x" * 20, 10, True, 1002),
        (bytes([0x82, 127]) + struct.pack("!Q", 1 << 63 | 1 << 16) + b"x" * 20, 10, True, 1002),
        (bytes([0x82, 127]) + struct.pack("!Q", 70_000) + b"x" * 20, 10, True, 1009),
        (client_frame(BINARY, b"x" * 300, b"abcd"), 8, False, 1009),  # the key comes first
        (client_frame(BINARY, b"x" * 300, b"abcd"), 2, True, 1002),  # masked to a client
        (server_frame(CONTINUATION, b"x" * 300), 4, True, 1002),  # after the length
    ],
)
def test_a_bad_header_fails_as_soon_as_it_is_whole(
    wire: bytes, header: int, client: bool, code: int
) -> None:
    """Fed a byte at a time, and cut anywhere: the error comes with the header's last
    byte, never later (the payload is not waited for) and never earlier."""
    for cut in range(1, len(wire)):
        parser = FrameParser(client=client, max_message_size=200)
        parser.receive_data(wire[:cut])
        if cut < header:
            assert parser.next_event() is NEED_DATA
            parser.receive_data(wire[cut:])
        with pytest.raises(ProtocolError) as caught:
            parser.next_event()
        assert caught.value.code == code
    parser = FrameParser(client=client, max_message_size=200)
    for at in range(header - 1):
        parser.receive_data(wire[at : at + 1])
        assert parser.next_event() is NEED_DATA
    parser.receive_data(wire[header - 1 : header])
    with pytest.raises(ProtocolError) as caught:
        parser.next_event()
    assert caught.value.code == code


def stream(*, masked: bool) -> list[bytes]:
    """Frames of every kind and length form, with control frames between fragments."""
    key = b"\x11\x22\x33\x44"

    def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
        if not masked:
            return server_frame(opcode, payload, fin=fin)
        wire = client_frame(opcode, payload, key)
        return bytes([wire[0] & ~(0 if fin else 0x80)]) + wire[1:]

    return [
        frame(TEXT, "h\u00e9llo".encode()),
        frame(BINARY, b""),
        frame(PING, b"p" * 125),  # the longest control frame
        frame(BINARY, bytes(range(256)) * 2),  # a 16-bit length
        frame(TEXT, b"t" * 126),  # the shortest 16-bit length
        frame(TEXT, b"ab\xe2", fin=False),
        frame(PONG, b""),
        frame(CONTINUATION, b"\x82", fin=False),
        frame(CONTINUATION, b"\xac" + b"z" * 300),
        frame(BINARY, b"y" * 70_000),  # 64-bit length, the limit, past DIRECT_RECEIVE_BYTES
        frame(CLOSE, struct.pack("!H", 1000) + b"r" * 123),  # the longest close
        frame(BINARY, b"after the close"),
    ]


STREAM_EVENTS: list[Event] = [
    Message(TEXT, "h\u00e9llo".encode()),
    Message(BINARY, b""),
    Ping(b"p" * 125),
    Message(BINARY, bytes(range(256)) * 2),
    Message(TEXT, b"t" * 126),
    Pong(b""),
    Message(TEXT, "ab\u20ac".encode() + b"z" * 300),
    Message(BINARY, b"y" * 70_000),
    Close(1000, "r" * 123),
]


def fed_in_pieces(wire: bytes, cuts: list[int], *, client: bool) -> list[Event]:
    parser = FrameParser(client=client, max_message_size=70_000)
    found: list[Event] = []
    for start, end in itertools.pairwise([0, *cuts, len(wire)]):
        parser.receive_data(wire[start:end])
        while not isinstance(event := parser.next_event(), NeedData):
            assert isinstance(event, (Message, Ping, Pong, Close)), event
            if isinstance(event, Message):
                event = Message(event.opcode, bytes(event.payload))
            found.append(event)
            if isinstance(event, Close):
                assert not parser.in_message  # what follows a close is dropped
                return found
    return found


@pytest.mark.parametrize("client", [True, False])
def test_a_stream_cut_at_every_point_gives_the_same_events(client: bool) -> None:
    frames = stream(masked=not client)
    wire = b"".join(frames)
    big = len(b"".join(frames[:9]))  # where the 70,000-byte frame starts
    assert equal(fed_in_pieces(wire, [], client=client), STREAM_EVENTS)
    for cut in [*range(big + 20), *range(big + 69_990, len(wire))]:
        assert equal(fed_in_pieces(wire, [cut], client=client), STREAM_EVENTS), cut
    byte_by_byte = [*range(1, big + 20), big + 35_000, *range(big + 69_990, len(wire))]
    assert equal(fed_in_pieces(wire, byte_by_byte, client=client), STREAM_EVENTS)


def test_in_message_says_whether_a_frame_or_message_is_under_way() -> None:
    parser = FrameParser(client=True, max_message_size=1000)
    assert not parser.in_message
    parser.receive_data(server_frame(BINARY, b"ab")[:1])
    assert parser.next_event() is NEED_DATA
    assert parser.in_message
    parser.receive_data(server_frame(BINARY, b"ab")[1:] + server_frame(TEXT, b"c", fin=False))
    assert parser.next_event() == Message(BINARY, b"ab")
    assert parser.next_event() is NEED_DATA
    assert parser.in_message  # a fragmented message
    parser.receive_data(server_frame(CONTINUATION, b"d"))
    assert parser.next_event() == Message(TEXT, b"cd")
    assert not parser.in_message
    parser.receive_data(server_frame(CLOSE, b"") + server_frame(BINARY, b"dropped")[:3])
    assert parser.next_event() == Close(1005)
    assert not parser.in_message  # nothing after a close counts
    parser.receive_data(b"more")
    assert not parser.in_message
    assert parser.next_event() == Close(1005)


def big_frame_parser() -> tuple[FrameParser, bytes]:
    payload = bytes(range(256)) * 400  # 102,400 bytes: read straight into its buffer
    parser = FrameParser(client=True, max_message_size=1 << 20)
    wire = server_frame(BINARY, payload)
    parser.receive_data(wire[:1000])
    assert parser.next_event() is NEED_DATA
    return parser, wire


def test_buffer_updated_takes_zero_to_the_room_left() -> None:
    parser, wire = big_frame_parser()
    view = parser.get_buffer()
    assert view is not None and len(view) == len(wire) - 1000
    view.release()
    parser.buffer_updated(0)  # a read of nothing (recv_into at the end of the stream)
    view = parser.get_buffer()
    assert view is not None and len(view) == len(wire) - 1000
    with view:
        view[:] = wire[1000:]
    with pytest.raises(ValueError, match=r"^buffer_updated without a matching get_buffer$"):
        parser.buffer_updated(len(wire) - 1000 + 1)  # more than there was room for
    with pytest.raises(ValueError, match=r"^buffer_updated without a matching get_buffer$"):
        parser.buffer_updated(-1)
    assert parser.next_event() is NEED_DATA  # the refused counts changed nothing
    parser.buffer_updated(len(wire) - 1000)
    assert parser.get_buffer() is None
    parser.buffer_updated(0)  # the buffer is full, not yet handed out: nothing to add
    with pytest.raises(ValueError, match=r"^buffer_updated without a matching get_buffer$"):
        parser.buffer_updated(1)
    assert equal(parser.next_event(), Message(BINARY, wire[10:]))
    with pytest.raises(ValueError, match=r"^buffer_updated without a matching get_buffer$"):
        parser.buffer_updated(0)


def test_buffer_updated_counts_from_what_was_already_filled() -> None:
    parser, wire = big_frame_parser()
    room = len(wire) - 1000
    parser.receive_data(wire[1000:2000])  # fills the buffer too
    view = parser.get_buffer()
    assert view is not None and len(view) == room - 1000
    with view:
        view[:] = wire[2000:]
    with pytest.raises(ValueError, match=r"^buffer_updated without a matching get_buffer$"):
        parser.buffer_updated(room)  # room at the start, more than what is left now
    parser.buffer_updated(room - 1000)
    assert equal(parser.next_event(), Message(BINARY, wire[10:]))


@contextlib.contextmanager
def tracing() -> Iterator[None]:
    """Trace allocations (blocks from before are not traced, nor their reallocation)."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        yield
    finally:
        if not was_tracing:
            tracemalloc.stop()


def peak_allocated_by(action: Callable[[], object]) -> int:
    """How many bytes ``action`` had allocated at most, beyond what it started with."""
    assert tracemalloc.is_tracing()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    action()
    return tracemalloc.get_traced_memory()[1] - before


@pytest.mark.parametrize("data_type", [bytes, bytearray])
def test_a_read_is_parsed_where_it_is_when_nothing_is_left_over(data_type: type) -> None:
    """The module's promise: no copy of a read when no earlier bytes are pending."""
    wire = data_type(server_frame(BINARY, b"q" * 1_000_000) + server_frame(PING, b"x"))
    for head in [b"", server_frame(PONG, b"")]:  # a new parser, and one with all parsed
        parser = FrameParser(client=True, max_message_size=1 << 21)
        if head:
            parser.receive_data(head)
            assert parser.next_event() == Pong(b"")
        with tracing():
            assert peak_allocated_by(lambda: parser.receive_data(wire)) < 10_000  # noqa: B023
        assert equal(parser.next_event(), Message(BINARY, b"q" * 1_000_000))
        assert parser.next_event() == Ping(b"x")


def test_a_frame_that_spans_reads_grows_in_one_buffer() -> None:
    """Bytes that span reads are joined by appending to one buffer of ours, not by
    copying all that was gathered again on each read (which would be quadratic)."""
    payload = b"g" * (DIRECT_RECEIVE_MAX + 1)  # too big to be read into its own buffer
    wire = server_frame(BINARY, payload)
    parser = FrameParser(client=True, max_message_size=1 << 21)
    with tracing():
        parser.receive_data(wire[:1000])
        parser.receive_data(wire[1000:900_000])  # joined: the one copy of what was gathered
        assert parser.next_event() is NEED_DATA
        for at in range(900_000, 905_000, 1000):
            piece = wire[at : at + 1000]
            assert peak_allocated_by(lambda: parser.receive_data(piece)) < 300_000  # noqa: B023
    parser.receive_data(wire[905_000:])
    assert equal(parser.next_event(), Message(BINARY, payload))


@pytest.mark.parametrize("data_type", [bytes, bytearray])
def test_a_message_is_bytes_unless_read_into_its_own_buffer(data_type: type) -> None:
    """Fed whole, joined across reads, masked or not: the payload is one immutable copy
    (only a frame read straight into its own buffer hands that bytearray on)."""
    for client in (True, False):
        frames = stream(masked=not client)
        wire = b"".join(frames[:4])
        parser = FrameParser(client=client, max_message_size=1000)
        for at in range(0, len(wire), 7):
            parser.receive_data(data_type(wire[at : at + 7]))
            while not isinstance(event := parser.next_event(), NeedData):
                if isinstance(event, Message):
                    assert type(event.payload) is bytes, event
        parser.receive_data(data_type(wire))
        found = [parser.next_event() for _ in range(4)]
        assert found == STREAM_EVENTS[:4]
        assert [type(event.payload) for event in found] == [bytes] * 4
