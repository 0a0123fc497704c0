"""The serializers and event types of ``_core/websocket_frames.py``, byte for byte:
frame headers in their shortest length form at every boundary (RFC 6455 §5.2, checked
against the RFC's own examples of §5.7 and against wsproto's serializer), masking
(§5.3), control frames (§5.5), close payloads and their 123-byte reasons cut between
characters (§5.5.1, §7.4), and what the event types promise: equality, hashing and
their reprs. (The parser's rules are in test_websocket_frames.py.)"""

from __future__ import annotations

import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from exec_runtime._core.websocket_frames import (
    BINARY,
    CLOSE,
    CONTINUATION,
    MAX_CLOSE_REASON_BYTES,
    NEED_DATA,
    PING,
    PONG,
    TEXT,
    Close,
    FrameParser,
    Message,
    Ping,
    Pong,
    ProtocolError,
    client_frame,
    close_payload,
    control_frame,
    mask,
    server_frame_header,
    truncate_utf8,
)

OPCODES = [CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG]
BOUNDARY_LENGTHS = [0, 1, 125, 126, 127, 255, 256, 65535, 65536, 70_000]
"""Each side of the 7-bit / 16-bit (126) and 16-bit / 64-bit (65536) limits."""
KEY = b"\x37\xfa\x21\x3d"


def rfc_header(opcode: int, length: int, *, masked: bool) -> bytes:
    """A final frame's header, written here from RFC 6455 §5.2 (shortest length form)."""
    bit = 0x80 if masked else 0
    if length <= 125:
        return bytes([0x80 | opcode, bit | length])
    if length <= 0xFFFF:
        return bytes([0x80 | opcode, bit | 126]) + length.to_bytes(2, "big")
    return bytes([0x80 | opcode, bit | 127]) + length.to_bytes(8, "big")


def wsproto_server_frame(opcode: int, payload: bytes) -> bytes:
    """wsproto's serialization of an unmasked final frame (the oracle)."""
    return bytes(
        FrameProtocol(client=False, extensions=[])._serialize_frame(Opcode(opcode), payload)
    )


def filler(length: int) -> bytes:
    """``length`` bytes of ASCII (so valid text), not all alike."""
    return (bytes(range(128)) * (length // 128 + 1))[:length]


def parsed(wire: bytes, *, client: bool) -> object:
    parser = FrameParser(client=client, max_message_size=1 << 20)
    parser.receive_data(wire)
    return parser.next_event()


# --- RFC 6455 §5.7: the RFC's own examples ---------------------------------------------


def test_the_rfc_examples_byte_for_byte() -> None:
    hello = b"Hello"
    masked_hello = bytes.fromhex("8185 37fa213d 7f9f4d5158")
    assert server_frame_header(TEXT, 5) + hello == bytes.fromhex("8105 48656c6c6f")
    assert client_frame(TEXT, hello, KEY) == masked_hello
    assert control_frame(PING, hello, client=False) == bytes.fromhex("8905 48656c6c6f")
    assert client_frame(PONG, hello, KEY) == bytes.fromhex("8a85 37fa213d 7f9f4d5158")
    # "256 bytes binary message in a single unmasked frame" and the 64 KiB one.
    assert server_frame_header(BINARY, 256) == bytes.fromhex("827e 0100")
    assert server_frame_header(BINARY, 65536) == bytes.fromhex("827f 0000000000010000")


# --- headers: 7, 16 or 64 bits, the shortest that holds the length ----------------------


@pytest.mark.parametrize("opcode", OPCODES)
@pytest.mark.parametrize("length", BOUNDARY_LENGTHS)
def test_a_server_frame_header_uses_the_shortest_length_form(opcode: int, length: int) -> None:
    header = server_frame_header(opcode, length)
    assert header == rfc_header(opcode, length, masked=False)
    assert len(header) == (2 if length < 126 else 4 if length < 65536 else 10)


@pytest.mark.parametrize("length", [1 << 32, (1 << 63) - 1])
def test_a_server_frame_header_holds_any_64_bit_length(length: int) -> None:
    assert server_frame_header(BINARY, length) == b"\x82\x7f" + struct.pack("!Q", length)


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
@pytest.mark.parametrize("length", BOUNDARY_LENGTHS)
def test_a_server_frame_is_what_wsproto_sends(opcode: int, length: int) -> None:
    payload = filler(length)
    wire = server_frame_header(opcode, length) + payload
    assert wire == wsproto_server_frame(opcode, payload)
    assert parsed(wire, client=True) == Message(opcode, payload)


@pytest.mark.parametrize("opcode", OPCODES)
@pytest.mark.parametrize("length", BOUNDARY_LENGTHS)
def test_a_client_frame_is_masked_with_its_key_in_the_shortest_length_form(
    opcode: int, length: int
) -> None:
    payload = filler(length)
    wire = client_frame(opcode, payload, KEY)
    header = rfc_header(opcode, length, masked=True)
    masked = bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))
    assert wire == header + KEY + masked
    if opcode in (TEXT, BINARY):  # (wsproto refuses a long control frame)
        # The same header as wsproto's, with the mask bit set.
        theirs = wsproto_server_frame(opcode, payload)[: len(header)]
        assert wire[: len(header)] == bytes([theirs[0], theirs[1] | 0x80]) + theirs[2:]
        assert parsed(wire, client=False) == Message(opcode, payload)


def test_a_client_frame_without_a_key_gets_a_fresh_random_one() -> None:
    payload = b"x" * 300
    first, second = client_frame(BINARY, payload), client_frame(BINARY, payload)
    assert first[:4] == second[:4] == b"\x82\xfe\x01\x2c"
    assert first[4:8] != second[4:8]  # 2**-32 to fail by chance
    for wire in (first, second):
        assert wire[8:] == mask(payload, wire[4:8])
        assert parsed(wire, client=False) == Message(BINARY, payload)


# --- masking (RFC 6455 §5.3) -----------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 8, 9])
def test_mask_returns_exactly_the_payloads_length(length: int) -> None:
    payload = bytes(range(1, length + 1))
    assert mask(payload, KEY) == bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))
    assert mask(bytearray(payload), KEY) == mask(memoryview(payload), KEY)


# --- control frames (RFC 6455 §5.5) ----------------------------------------------------


@pytest.mark.parametrize("opcode", [CLOSE, PING, PONG])
def test_a_control_frame_may_carry_125_bytes(opcode: int) -> None:
    payload = b"\x03\xe8" + b"r" * 123
    wire = control_frame(opcode, payload, client=False)
    assert wire == bytes([0x80 | opcode, 125]) + payload
    masked = control_frame(opcode, payload, client=True)
    assert masked[:2] == bytes([0x80 | opcode, 0x80 | 125])
    assert len(masked) == 2 + 4 + 125
    assert mask(masked[6:], masked[2:6]) == payload


@pytest.mark.parametrize("client", [False, True])
@pytest.mark.parametrize("size", [126, 127, 70_000])
def test_a_control_frame_longer_than_125_bytes_is_refused(client: bool, size: int) -> None:
    with pytest.raises(ValueError) as caught:
        control_frame(PING, b"p" * size, client=client)
    assert str(caught.value) == "a control frame's payload is at most 125 bytes"


# --- close payloads (RFC 6455 §5.5.1, §7.4) --------------------------------------------


def test_a_close_payload_without_a_reason_is_the_code_alone() -> None:
    assert close_payload(1000) == b"\x03\xe8"
    assert close_payload(4999) == b"\x13\x87"
    assert close_payload(3000, "bye") == b"\x0b\xb8bye"


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65535, -1])
def test_a_close_code_that_may_not_be_sent_is_refused_with_its_number(code: int) -> None:
    with pytest.raises(ValueError) as caught:
        close_payload(code, "why")
    assert str(caught.value) == f"close code {code} may not be sent (RFC 6455 §7.4)"


@given(code=st.sampled_from([1000, 1011, 1014, 3000, 4999]), reason=st.text(max_size=130))
def test_a_close_frame_carries_the_code_and_the_reason_cut_to_123_bytes(
    code: int, reason: str
) -> None:
    payload = close_payload(code, reason)
    assert payload[:2] == code.to_bytes(2, "big")
    assert payload[2:] == truncate_utf8(reason.encode(), MAX_CLOSE_REASON_BYTES)
    for client in (False, True):
        wire = control_frame(CLOSE, payload, client=client)
        cut = payload[2:].decode()
        assert parsed(wire, client=not client) == Close(code, cut)


# --- truncate_utf8 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "limit", "cut"),
    [
        (b"", 0, b""),
        (b"abc", 3, b"abc"),
        (b"abc", 2, b"ab"),
        ("abcé".encode(), 4, b"abc"),
        ("abcé".encode(), 5, "abcé".encode()),
        ("ab€".encode(), 4, b"ab"),  # a 3-byte character cut after 2
        ("ab😀".encode(), 5, b"ab"),  # a 4-byte character cut after 3
        ("aé".encode(), 2, b"a"),
        ("é".encode(), 1, b""),  # the first character does not fit: nothing
        ("éx".encode(), 1, b""),
        ("😀😀".encode(), 7, "😀".encode()),
        ("😀😀".encode(), 3, b""),
    ],
)
def test_truncate_utf8_cuts_before_the_character_that_does_not_fit(
    data: bytes, limit: int, cut: bytes
) -> None:
    assert truncate_utf8(data, limit) == cut


@given(st.binary(max_size=20), st.integers(0, 24))
@example(b"\x80\x80a", 1)  # continuation bytes from the start
@example(b"\x80\x80\x80", 1)
def test_truncate_utf8_never_returns_more_than_the_limit_whatever_the_bytes(
    data: bytes, limit: int
) -> None:
    cut = truncate_utf8(data, limit)
    assert data.startswith(cut)
    assert len(cut) <= limit


# --- the event types -------------------------------------------------------------------


def test_need_data_is_named_in_its_repr() -> None:
    assert repr(NEED_DATA) == "NEED_DATA"


def test_a_message_repr_shows_its_kind_its_first_40_bytes_and_its_size() -> None:
    assert repr(Message(TEXT, b"hello")) == "Message(TEXT, b'hello', 5 bytes)"
    assert repr(Message(BINARY, b"\x00\x01")) == "Message(BINARY, b'\\x00\\x01', 2 bytes)"
    long = bytearray(b"0123456789" * 4 + b"ABCDEF")
    assert repr(Message(BINARY, long)) == f"Message(BINARY, {bytes(long[:40])!r}, 46 bytes)"
    assert repr(Message(TEXT, b"x" * 41)) == f"Message(TEXT, {b'x' * 40!r}, 41 bytes)"


def test_pings_and_pongs_hold_their_payload_and_say_which_they_are() -> None:
    assert Ping(b"hi").payload == b"hi"
    assert Pong(b"").payload == b""
    assert repr(Ping(b"hi")) == "Ping(b'hi')"
    assert repr(Pong(b"")) == "Pong(b'')"


def test_events_are_equal_only_to_the_same_kind_with_the_same_content() -> None:
    assert Ping(b"a") == Ping(b"a")
    assert Ping(b"a") != Ping(b"b")
    assert Ping(b"a") != Pong(b"a")
    assert Pong(b"a") != Ping(b"a")
    assert Ping(b"a") != b"a"
    assert Close(1000, "x") == Close(1000, "x")
    assert Close(1000, "x") != Close(1001, "x")
    assert Close(1000, "x") != Close(1000, "y")
    assert Close(1000, "") != (1000, "")


def test_events_hash_by_kind_and_content() -> None:
    distinct = [
        Ping(b""),
        Ping(b"a"),
        Pong(b""),
        Pong(b"a"),
        Close(1000),
        Close(1001),
        Close(1000, "a"),
    ]
    assert len({hash(event) for event in distinct}) == len(distinct)
    assert hash(Ping(b"a")) == hash(Ping(b"a"))
    assert hash(Close(1000, "a")) == hash(Close(1000, "a"))
    assert len({*distinct, Ping(b"a"), Close(1000)}) == len(distinct)


def test_a_protocol_error_carries_its_close_code_and_message() -> None:
    error = ProtocolError(1002, "a control frame is fragmented")
    assert error.code == 1002
    assert str(error) == "a control frame is fragmented"
    assert error.args == ("a control frame is fragmented",)
