"""protocol_schema: names, omission, bytes, errors, codecs and the committed JSON Schema.

Instances are built from msgspec's own type description (``msgspec.inspect``), so every
struct is covered, new ones included, without a hand-written example per type.
"""

from __future__ import annotations

import base64
import inspect
import json
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol_schema as wire
from protocol_schema import (
    JSON,
    MSGPACK,
    Codec,
    InvalidParams,
    MalformedMessage,
    envelope,
    fs,
    process,
    session,
)
from protocol_schema._base import WireStruct

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "protocol_schema" / "schema.json"
CODECS = [pytest.param(JSON, id="json"), pytest.param(MSGPACK, id="msgpack")]

ALL_STRUCTS: list[type[WireStruct]] = sorted(
    {
        obj
        for module in (envelope, process, fs, session)
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, WireStruct)
        and obj.__module__ == module.__name__
    },
    key=lambda cls: cls.__name__,
)
ENVELOPES = {
    envelope.IncomingMessage,
    envelope.Request,
    envelope.Notification,
    envelope.Response,
    envelope.ErrorResponse,
}
WIRE_TYPES: list[type[WireStruct]] = sorted(
    {spec.params for spec in wire.METHODS.values()}
    | {spec.result for spec in wire.METHODS.values()}
    | set(wire.NOTIFICATIONS.values()),
    key=lambda cls: cls.__name__,
)
"""Every type that is a method's params or result or a notification's params."""


def camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def fields(cls: type) -> tuple[mi.Field, ...]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return info.fields


def default_of(field: mi.Field) -> Any:
    if field.default_factory is not mi.NODEFAULT:
        return field.default_factory()
    if field.default is not mi.NODEFAULT:
        return field.default
    return msgspec.UNSET  # msgspec.inspect hides an UNSET default


# --- full instances: every field set, to a non-default value where the type allows -----


def full_value(t: mi.Type, default: Any = mi.NODEFAULT) -> Any:
    if isinstance(t, mi.BoolType):
        return not default if isinstance(default, bool) else True
    if isinstance(t, mi.IntType):
        return 7
    if isinstance(t, mi.StrType):
        return "s-ü/x y"
    if isinstance(t, mi.BytesType):
        return b"\x00\xff\xfebin"
    if isinstance(t, mi.ListType):
        return [full_value(t.item_type)]
    if isinstance(t, mi.DictType):
        return {"K_1": full_value(t.value_type)}
    if isinstance(t, mi.LiteralType):
        others = [v for v in t.values if v != default]
        return others[0] if others else t.values[0]
    if isinstance(t, mi.StructType):
        return full_instance(t.cls)
    if isinstance(t, mi.UnionType):
        return full_value(next(u for u in t.types if not isinstance(u, mi.NoneType)), default)
    if isinstance(t, mi.AnyType):
        return {"any": [1, "two"]}
    raise AssertionError(f"no example for {t!r}")


def full_instance(cls: type) -> Any:
    return cls(**{f.name: full_value(f.type, default_of(f)) for f in fields(cls)})


def expected_keys(instance: Any) -> set[str]:
    """camelCase of every field, less those at their default when the struct omits them."""
    omit = type(instance).__struct_config__.omit_defaults
    keys = set()
    for f in fields(type(instance)):
        value = getattr(instance, f.name)
        if value is msgspec.UNSET or (omit and value == default_of(f)):
            continue
        keys.add(camel(f.name))
    return keys


def wire_dict(codec: Codec, instance: Any) -> dict[str, Any]:
    decoded = (msgspec.msgpack if codec.binary else msgspec.json).decode(codec.encode(instance))
    assert isinstance(decoded, dict)
    return decoded


# --- hypothesis instances built from the same type description -------------------------


def strategy_for(t: mi.Type) -> st.SearchStrategy[Any]:
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.IntType):
        return st.integers(-(2**63), 2**63 - 1)
    if isinstance(t, mi.StrType):
        return st.text(max_size=8)
    if isinstance(t, mi.BytesType):
        return st.binary(max_size=16)
    if isinstance(t, mi.ListType):
        return st.lists(strategy_for(t.item_type), max_size=3)
    if isinstance(t, mi.DictType):
        return st.dictionaries(st.text(max_size=6), strategy_for(t.value_type), max_size=3)
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.UnionType):
        return st.one_of([strategy_for(u) for u in t.types])
    if isinstance(t, mi.StructType):
        return struct_strategy(t.cls)
    raise AssertionError(f"no strategy for {t!r}")


def struct_strategy(cls: type) -> st.SearchStrategy[Any]:
    fs_ = fields(cls)
    kwargs = st.fixed_dictionaries(
        {f.name: strategy_for(f.type) for f in fs_ if f.required},
        optional={f.name: strategy_for(f.type) for f in fs_ if not f.required},
    )
    return kwargs.map(lambda kw: cls(**kw))


# --- names --------------------------------------------------------------------------------


def test_every_struct_is_found() -> None:
    names = {cls.__name__ for cls in ALL_STRUCTS}
    assert {"ProcessStartParams", "FsWalkOptions", "InitializeResult", "Request"} <= names
    assert set(WIRE_TYPES) <= set(ALL_STRUCTS)


@pytest.mark.parametrize("cls", ALL_STRUCTS, ids=lambda cls: cls.__name__)
def test_field_names_are_camel_case(cls: type) -> None:
    for f in fields(cls):
        assert f.encode_name == camel(f.name), f"{cls.__name__}.{f.name}"
        assert "_" not in f.encode_name


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("cls", sorted(set(ALL_STRUCTS) - ENVELOPES, key=lambda c: c.__name__))
def test_full_instance_keys_and_round_trip(cls: type, codec: Codec) -> None:
    instance = full_instance(cls)
    assert set(wire_dict(codec, instance)) == expected_keys(instance)
    assert codec.decode(codec.encode(instance), cls) == instance


# --- round trips through both codecs ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(wire.METHODS), ids=str)
def test_method_examples_round_trip(name: str) -> None:
    spec = wire.METHODS[name]
    for cls in (spec.params, spec.result):
        example = full_instance(cls)
        for codec in (JSON, MSGPACK):
            assert codec.decode(codec.encode(example), cls) == example


@given(data=st.data(), cls=st.sampled_from(WIRE_TYPES))
def test_any_instance_round_trips(data: st.DataObject, cls: type) -> None:
    instance = data.draw(struct_strategy(cls), label="instance")
    for codec in (JSON, MSGPACK):
        assert codec.decode(codec.encode(instance), cls) == instance


def test_st_from_type_instances_round_trip() -> None:
    """Hypothesis can also build the simple structs itself; they survive both codecs."""

    @given(st.from_type(process.ProcessWriteParams), st.from_type(fs.FsReadBlockResult))
    def check(write: process.ProcessWriteParams, block: fs.FsReadBlockResult) -> None:
        for codec in (JSON, MSGPACK):
            assert codec.decode(codec.encode(write), process.ProcessWriteParams) == write
            assert codec.decode(codec.encode(block), fs.FsReadBlockResult) == block

    check()


# --- unknown fields and omitted defaults --------------------------------------------------


def add_unknown_fields(instance: Any, as_dict: dict[str, Any]) -> None:
    """Add unknown members to a struct's dict and to every nested struct's dict."""
    as_dict.update({"jsonrpc": "2.0", "futureField": {"nested": [1, None]}})
    for f in fields(type(instance)):
        value = getattr(instance, f.name)
        if isinstance(value, msgspec.Struct):
            add_unknown_fields(value, as_dict[f.encode_name])
        elif isinstance(value, list):
            for item, item_dict in zip(value, as_dict[f.encode_name], strict=True):
                if isinstance(item, msgspec.Struct):
                    add_unknown_fields(item, item_dict)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("cls", WIRE_TYPES, ids=lambda cls: cls.__name__)
def test_unknown_fields_are_ignored(cls: type, codec: Codec) -> None:
    instance = full_instance(cls)
    as_dict = wire_dict(codec, instance)
    add_unknown_fields(instance, as_dict)
    data = (msgspec.msgpack if codec.binary else msgspec.json).encode(as_dict)
    assert codec.decode(data, cls) == instance


def test_unknown_envelope_members_are_ignored() -> None:
    message = JSON.decode_message(
        b'{"jsonrpc":"2.0","id":3,"method":"process/read","params":{"processId":"p"},'
        b'"extra":{"x":1}}'
    )
    assert (message.id, message.method) == (3, "process/read")
    params = JSON.decode(message.params, process.ProcessReadParams)
    assert params == process.ProcessReadParams(process_id="p")


@pytest.mark.parametrize("codec", CODECS)
def test_optional_fields_are_omitted(codec: Codec) -> None:
    assert wire_dict(codec, process.ProcessReadParams(process_id="p")) == {"processId": "p"}
    start = process.ProcessStartParams(process_id="p", argv=["true"], cwd="file:///")
    # env and tty are required on the wire (PROTOCOL §4): always sent.
    assert wire_dict(codec, start) == {
        "processId": "p",
        "argv": ["true"],
        "cwd": "file:///",
        "env": {},
        "tty": False,
    }
    assert wire_dict(codec, session.InitializeParams(client_name="c")) == {"clientName": "c"}
    assert wire_dict(codec, envelope.ErrorObject(code=1, message="m")) == {
        "code": 1,
        "message": "m",
    }
    assert wire_dict(codec, envelope.Request(id=1, method="m")) == {"id": 1, "method": "m"}
    assert wire_dict(codec, envelope.Notification(method="initialized")) == {
        "method": "initialized"
    }
    assert wire_dict(codec, session.EmptyResult()) == {}
    # A legacy exit has no sandboxDenied; a current one always has it.
    legacy = process.ProcessExitedParams(process_id="p", seq=3, exit_code=7)
    assert wire_dict(codec, legacy) == {"processId": "p", "seq": 3, "exitCode": 7}
    exited = process.ProcessExitedParams(process_id="p", seq=3, exit_code=7, sandbox_denied=False)
    assert wire_dict(codec, exited)["sandboxDenied"] is False


@pytest.mark.parametrize("codec", CODECS)
def test_required_and_codex_required_fields_are_always_sent(codec: Codec) -> None:
    # Codex requires all five envPolicy members and followDirectorySymlinks (PROTOCOL §10).
    start = process.ProcessStartParams(
        process_id="p", argv=["true"], cwd="file:///", env_policy=process.EnvPolicy()
    )
    assert wire_dict(codec, start)["envPolicy"] == {
        "inherit": "all",
        "ignoreDefaultExcludes": False,
        "exclude": [],
        "set": {},
        "includeOnly": [],
    }
    options = fs.FsWalkOptions(max_depth=1, max_directories=1, max_entries=1)
    assert wire_dict(codec, options)["followDirectorySymlinks"] is False
    # fs/remove's flags default to true on the wire (rm -rf) and to false in the Python
    # client (os.remove / rmdir): always sent, whatever their value.
    remove = fs.FsRemoveParams(path="file:///x")
    assert wire_dict(codec, remove) == {"path": "file:///x", "recursive": True, "force": True}
    # process/write's chunk is required (PROTOCOL §4), even when empty.
    write = process.ProcessWriteParams(process_id="p", write_id="w")
    assert wire_dict(codec, write)["chunk"] == (b"" if codec.binary else "")
    # Results keep their nullable members as null.
    result = process.ProcessReadResult(
        chunks=[],
        next_seq=1,
        exited=False,
        exit_code=None,
        closed=False,
        failure=None,
        sandbox_denied=False,
        earliest_retained_seq=1,
    )
    assert wire_dict(codec, result) == {
        "chunks": [],
        "nextSeq": 1,
        "exited": False,
        "exitCode": None,
        "closed": False,
        "failure": None,
        "sandboxDenied": False,
        "earliestRetainedSeq": 1,
    }
    assert wire_dict(codec, envelope.Response(id="a", result=None)) == {"id": "a", "result": None}


@pytest.mark.parametrize("codec", CODECS)
def test_absent_and_default_decode_the_same(codec: Codec) -> None:
    encode = msgspec.msgpack.encode if codec.binary else msgspec.json.encode
    minimal = {"processId": "p", "argv": ["true"], "cwd": "file:///"}
    start = codec.decode(encode(minimal), process.ProcessStartParams)
    assert (start.env, start.tty) == ({}, False)
    assert start.env_policy_value is None
    assert start.arg0_value is None
    assert start.tty_size_value is None
    assert not start.pipe_stdin_value
    nulls = {**minimal, "envPolicy": None, "arg0": None, "ttySize": None, "pipeStdin": None}
    start = codec.decode(encode(nulls), process.ProcessStartParams)
    assert (start.env_policy_value, start.arg0_value, start.tty_size_value) == (None,) * 3
    assert not start.pipe_stdin_value
    policy = codec.decode(encode({}), process.EnvPolicy)
    assert policy == process.EnvPolicy()


# --- bytes --------------------------------------------------------------------------------


def test_bytes_are_base64_in_json() -> None:
    data = bytes(range(256))
    output = process.ProcessOutputParams(process_id="p", seq=1, stream="stdout", chunk=data)
    encoded = json.loads(JSON.encode(output))
    assert encoded["chunk"] == base64.b64encode(data).decode()
    assert JSON.decode(JSON.encode(output), process.ProcessOutputParams).chunk == data
    # Standard alphabet with padding.
    block = fs.FsReadBlockResult(chunk=b"\xfb\xff", eof=True)
    assert json.loads(JSON.encode(block))["chunk"] == "+/8="
    write = JSON.decode(b'{"processId":"p","writeId":"w","chunk":"aGk="}', wire.ProcessWriteParams)
    assert write.chunk == b"hi"


def test_bytes_are_bin_in_msgpack() -> None:
    data = b"\x00\xff\xfe"
    chunk = process.ReadChunk(seq=1, stream="pty", chunk=data)
    encoded = MSGPACK.encode(chunk)
    assert b"\xc4\x03" + data in encoded  # bin 8, length 3
    assert msgspec.msgpack.decode(encoded)["chunk"] == data
    assert MSGPACK.decode(encoded, process.ReadChunk) == chunk


# --- decode errors ------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_invalid_params_name_the_field(codec: Codec) -> None:
    encode = msgspec.msgpack.encode if codec.binary else msgspec.json.encode
    with pytest.raises(InvalidParams, match=r"\$\.processId"):
        codec.decode(encode({"processId": 5}), process.ProcessReadParams)
    with pytest.raises(InvalidParams, match="processId"):
        codec.decode(encode({}), process.ProcessReadParams)
    with pytest.raises(InvalidParams, match=r"\$\.ttySize\.rows"):
        codec.decode(
            encode({"processId": "p", "argv": [], "cwd": "", "ttySize": {"rows": "x", "cols": 1}}),
            process.ProcessStartParams,
        )
    with pytest.raises(InvalidParams, match=r"\$\.signal"):
        codec.decode(encode({"processId": "p", "signal": "bogus"}), process.ProcessSignalParams)
    with pytest.raises(InvalidParams, match=r"\$\.argv\[1\]"):
        codec.decode(
            encode({"processId": "p", "argv": ["a", 1], "cwd": ""}), wire.ProcessStartParams
        )
    with pytest.raises(InvalidParams):
        codec.decode(encode([1, 2]), process.ProcessReadParams)


def test_invalid_base64_names_the_field() -> None:
    with pytest.raises(InvalidParams, match=r"\$\.chunk"):
        JSON.decode(
            b'{"processId":"p","writeId":"w","chunk":"not base64!"}', wire.ProcessWriteParams
        )


def test_invalid_params_is_not_malformed() -> None:
    assert not issubclass(InvalidParams, MalformedMessage)
    assert wire.errors.INVALID_PARAMS == -32602
    assert wire.errors.INVALID_REQUEST == -32600


# --- absent and null params -----------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_absent_or_null_params_decode_as_empty_object(codec: Codec) -> None:
    null = b"\xc0" if codec.binary else b"null"
    for raw in (None, msgspec.Raw(), b"", null, msgspec.Raw(null)):
        assert codec.decode(raw, session.EmptyParams) == session.EmptyParams()
        assert codec.decode(raw, session.EnvironmentStatusResult).status == "ready"
        with pytest.raises(InvalidParams, match="processId"):
            codec.decode(raw, process.ProcessReadParams)
    empty = b"\x80" if codec.binary else b"{}"
    assert codec.decode(empty, session.EmptyParams) == session.EmptyParams()


@pytest.mark.parametrize("codec", CODECS)
def test_envelope_params_absent_null_or_empty(codec: Codec) -> None:
    encode = msgspec.msgpack.encode if codec.binary else msgspec.json.encode
    for extra in ({}, {"params": None}, {"params": {}}):
        message = codec.decode_message(encode({"id": 1, "method": "environment/info", **extra}))
        assert message.method == "environment/info"
        assert codec.decode(message.params, session.EmptyParams) == session.EmptyParams()
    notification = codec.decode_message(encode({"method": "initialized"}))
    assert notification.id is msgspec.UNSET
    assert codec.decode(notification.params, session.EmptyParams) == session.EmptyParams()


def test_msgpack_small_ints_are_not_taken_for_null() -> None:
    """In msgpack, b" " is the integer 32: params 32 is invalid, not absent."""
    for value in (9, 10, 13, 32):
        with pytest.raises(InvalidParams):
            MSGPACK.decode(msgspec.msgpack.encode(value), session.EmptyParams)


# --- malformed messages -------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"not json", b"[1, 2]", b"42", b'{"id": {}}', b'{"method": 5}', b"\xff\xfe", "}{"],
)
def test_garbage_json_is_malformed(data: bytes | str) -> None:
    with pytest.raises(MalformedMessage):
        JSON.decode_message(data)


@pytest.mark.parametrize(
    "data", [b"", b"\xc1", b"\x92\x01\x02", b"\x2a", b"\x81\xa2id\x80", "text frame"]
)
def test_garbage_msgpack_is_malformed(data: bytes | str) -> None:
    with pytest.raises(MalformedMessage):
        MSGPACK.decode_message(data)


def test_text_and_binary_json_frames_decode_alike() -> None:
    text = '{"id":"x","method":"environment/status"}'
    assert JSON.decode_message(text) == JSON.decode_message(text.encode())


def test_codec_for_subprotocol() -> None:
    assert wire.codec_for_subprotocol(wire.MSGPACK_SUBPROTOCOL) is MSGPACK
    assert wire.codec_for_subprotocol(None) is JSON
    assert wire.codec_for_subprotocol("something-else") is JSON
    assert MSGPACK.binary and not JSON.binary
    with pytest.raises(ValueError, match="unknown codec"):
        Codec("xml")


# --- the JSON Schema ----------------------------------------------------------------------


def test_schema_covers_every_method_and_notification() -> None:
    schema = wire.json_schema()
    assert set(schema["methods"]) == set(wire.METHODS)
    assert set(schema["notifications"]) == set(wire.NOTIFICATIONS)
    defs = schema["$defs"]
    prefix = "#/$defs/"
    refs = [entry[key] for entry in schema["methods"].values() for key in ("params", "result")]
    refs += [entry["params"] for entry in schema["notifications"].values()]
    for ref in refs:
        assert ref["$ref"].startswith(prefix)
        assert ref["$ref"][len(prefix) :] in defs
    # The permission profile inside a sandbox intent is snake_case, as Codex sends it.
    snake_case = {("ProfileManaged", "file_system")}
    for name, definition in defs.items():
        for key in definition.get("properties", {}):
            assert "_" not in key or (name, key) in snake_case, f"{name}.{key}"
    assert schema["methods"]["process/read"]["params"] == {"$ref": "#/$defs/ProcessReadParams"}
    assert defs["ProcessReadParams"]["required"] == ["processId"]
    assert defs["ReadChunk"]["properties"]["chunk"]["contentEncoding"] == "base64"


def test_committed_schema_is_current() -> None:
    regenerate = "python -m protocol_schema protocol_schema/schema.json"
    assert SCHEMA_FILE.exists(), f"protocol_schema/schema.json is missing; run `{regenerate}`"
    committed = SCHEMA_FILE.read_text(encoding="utf-8")
    assert committed == wire.json_schema_text(), (
        f"protocol_schema/schema.json is stale; regenerate it with `{regenerate}`"
    )
    assert json.loads(committed) == wire.json_schema()


def test_main_writes_the_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from protocol_schema.__main__ import main

    out = tmp_path / "schema.json"
    assert main([str(out)]) == 0
    assert out.read_text(encoding="utf-8") == wire.json_schema_text()
    assert main(["-"]) == 0
    assert capsys.readouterr().out == wire.json_schema_text()


# --- the JSON fast path for output chunks (pybase64) -------------------------------------

_ids = st.text(max_size=40)
_traces = st.none() | st.builds(
    wire.TraceContext, traceparent=st.none() | st.text(max_size=60), tracestate=st.none()
)


@given(
    process_id=_ids,
    seq=st.integers(min_value=0, max_value=2**53),
    stream=st.sampled_from(["stdout", "stderr", "pty"]),
    chunk=st.binary(max_size=3000),
    trace=_traces,
)
def test_output_fast_paths_are_byte_identical_to_msgspec(
    process_id: str, seq: int, stream: Any, chunk: bytes, trace: wire.TraceContext | None
) -> None:
    params = wire.ProcessOutputParams(process_id=process_id, seq=seq, stream=stream, chunk=chunk)
    message = wire.Notification(method="process/output", params=params, trace=trace)
    for codec, reference in ((JSON, msgspec.json.encode), (MSGPACK, msgspec.msgpack.encode)):
        pieces = codec.encode_pieces(message)
        encoded = pieces if isinstance(pieces, bytes) else b"".join(pieces)
        assert encoded == codec.encode(message) == reference(message)
        decoded = codec.decode(codec.decode_message(encoded).params, wire.ProcessOutputParams)
        assert decoded == params
        # The client's one-pass decode takes every output notification we send.
        assert codec.decode_output_notification(encoded) == params


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65535, 65536, 300_000])
def test_msgpack_output_pieces_cover_every_bin_length(size: int) -> None:
    params = wire.ProcessOutputParams(process_id="p", seq=1, stream="stdout", chunk=b"x" * size)
    message = wire.Notification(method="process/output", params=params)
    pieces = MSGPACK.encode_pieces(message)
    assert isinstance(pieces, tuple) and pieces[-1] is params.chunk  # not copied
    assert b"".join(pieces) == msgspec.msgpack.encode(message)


def test_json_output_decode_falls_back_for_escapes_and_names_bad_base64() -> None:
    # A peer may escape "/" as "\/": valid JSON, valid base64 after unescaping.
    escaped = b'{"processId":"p","seq":1,"stream":"stdout","chunk":"\\/w=="}'
    assert JSON.decode(escaped, wire.ProcessOutputParams).chunk == b"\xff"
    for bad, field in [
        (b'{"processId":"p","seq":1,"stream":"stdout","chunk":"@@@@"}', "$.chunk"),
        (b'{"processId":"p","seq":1,"stream":"stdout","chunk":7}', "$.chunk"),
        (b'{"processId":"p","seq":1,"stream":"nope","chunk":""}', "$.stream"),
        (b'{"processId":"p","seq":"1","stream":"stdout","chunk":""}', "$.seq"),
        (b'{"seq":1,"stream":"stdout","chunk":""}', "processId"),
    ]:
        with pytest.raises(InvalidParams, match=field.replace("$", r"\$")):
            JSON.decode(bad, wire.ProcessOutputParams)


# --- the JSON fast path for process/read results (pybase64) -------------------------------

_read_chunks = st.lists(
    st.builds(
        wire.ReadChunk,
        seq=st.integers(min_value=0, max_value=2**53),
        stream=st.sampled_from(["stdout", "stderr", "pty"]),
        chunk=st.binary(max_size=600),
    ),
    max_size=5,
)
# A failure text may hold the very pattern the encoder splices at: escaped, it can't match.
_failures = st.none() | st.text(max_size=30) | st.just('"chunk":"" and \\"chunk\\":\\"\\"')


@given(
    chunks=_read_chunks,
    next_seq=st.integers(min_value=0, max_value=2**53),
    exited=st.booleans(),
    exit_code=st.none() | st.integers(min_value=-(2**31), max_value=2**31),
    failure=_failures,
    earliest=st.none() | st.integers(min_value=0, max_value=2**53),
    request_id=st.integers(min_value=0, max_value=2**31) | st.text(max_size=10),
)
def test_read_result_fast_paths_are_byte_identical_to_msgspec(
    chunks: list[wire.ReadChunk],
    next_seq: int,
    exited: bool,
    exit_code: int | None,
    failure: str | None,
    earliest: int | None,
    request_id: int | str,
) -> None:
    result = wire.ProcessReadResult(
        chunks=chunks,
        next_seq=next_seq,
        exited=exited,
        exit_code=exit_code,
        closed=exited,
        failure=failure,
        sandbox_denied=False,
        earliest_retained_seq=earliest,
    )
    message = wire.Response(id=request_id, result=result)
    for codec, reference in ((JSON, msgspec.json.encode), (MSGPACK, msgspec.msgpack.encode)):
        pieces = codec.encode_pieces(message)
        encoded = pieces if isinstance(pieces, bytes) else b"".join(pieces)
        assert encoded == codec.encode(message) == reference(message)
        assert codec.decode(codec.decode_message(encoded).result, wire.ProcessReadResult) == result
    if chunks:  # each chunk's base64 is its own piece, never copied into a frame
        pieces = JSON.encode_pieces(message)
        assert isinstance(pieces, tuple) and len(pieces) == 1 + 3 * len(chunks)


def test_json_read_decode_falls_back_for_escapes_and_names_bad_base64() -> None:
    def result(chunk: str) -> bytes:
        return (
            b'{"chunks":[{"seq":1,"stream":"stdout","chunk":"AA=="},'
            b'{"seq":2,"stream":"stdout","chunk":' + chunk.encode() + b"}],"
            b'"nextSeq":3,"exited":false,"exitCode":null,"closed":false,'
            b'"failure":null,"sandboxDenied":false}'
        )

    decoded = JSON.decode(result('"\\/w=="'), wire.ProcessReadResult)  # "\/" is "/"
    assert [c.chunk for c in decoded.chunks] == [b"\x00", b"\xff"]
    for bad in ('"@@@@"', "7", "null"):
        with pytest.raises(InvalidParams, match=r"\$\.chunks\[1\]\.chunk"):
            JSON.decode(result(bad), wire.ProcessReadResult)
    with pytest.raises(InvalidParams, match=r"\$\.nextSeq"):
        JSON.decode(result('""').replace(b'"nextSeq":3', b'"nextSeq":"3"'), wire.ProcessReadResult)


# --- the JSON fast path for process/write chunks (pybase64) -------------------------------


@given(
    process_id=_ids | st.just('"chunk":""'),
    write_id=st.text(max_size=20),
    chunk=st.binary(max_size=3000),
    close_stdin=st.booleans(),
    request_id=st.integers(min_value=0, max_value=2**31) | st.text(max_size=10),
    trace=_traces,
)
def test_write_fast_paths_are_byte_identical_to_msgspec(
    process_id: str,
    write_id: str,
    chunk: bytes,
    close_stdin: bool,
    request_id: int | str,
    trace: wire.TraceContext | None,
) -> None:
    params = wire.ProcessWriteParams(
        process_id=process_id, write_id=write_id, chunk=chunk, close_stdin=close_stdin
    )
    message = wire.Request(id=request_id, method="process/write", params=params, trace=trace)
    for codec, reference in ((JSON, msgspec.json.encode), (MSGPACK, msgspec.msgpack.encode)):
        pieces = codec.encode_pieces(message)
        encoded = pieces if isinstance(pieces, bytes) else b"".join(pieces)
        assert encoded == codec.encode(message) == reference(message)
        assert codec.decode(codec.decode_message(encoded).params, wire.ProcessWriteParams) == params
    if chunk:  # the base64 is a piece of its own, never copied into the frame
        pieces = JSON.encode_pieces(message)
        assert isinstance(pieces, tuple) and len(pieces) == 3


def test_json_write_decode_falls_back_for_escapes_and_keeps_every_check() -> None:
    def params(chunk: str | None, write_id: str = "w") -> bytes:
        member = b"" if chunk is None else b',"chunk":' + chunk.encode()
        return b'{"processId":"p","writeId":"' + write_id.encode() + b'"' + member + b"}"

    assert JSON.decode(params('"\\/w=="'), wire.ProcessWriteParams).chunk == b"\xff"
    assert JSON.decode(params(None), wire.ProcessWriteParams).chunk == b""  # the default
    for bad in ('"@@@@"', "7", "null"):
        with pytest.raises(InvalidParams, match=r"\$\.chunk"):
            JSON.decode(params(bad), wire.ProcessWriteParams)
    too_long = "w" * (process.MAX_WRITE_ID_LENGTH + 1)
    for chunk in ('"AA=="', '"\\/w=="'):  # the fast path and the fallback alike
        with pytest.raises(InvalidParams, match=r"\$\.writeId"):
            JSON.decode(params(chunk, too_long), wire.ProcessWriteParams)


# --- the client's one-pass decode of output notifications ---------------------------------


def _generic_output(codec: Codec, data: bytes) -> wire.ProcessOutputParams | None:
    """What the client's general path makes of ``data``: the envelope, then the params."""
    try:
        message = codec.decode_message(data)
    except MalformedMessage:
        return None
    if message.method != "process/output":
        return None
    try:
        return codec.decode(message.params, wire.ProcessOutputParams)
    except InvalidParams:
        return None


_json_scalars = st.none() | st.booleans() | st.integers(-5, 2**64 - 1) | st.text(max_size=8)
_output_params_fields = st.lists(
    st.tuples(
        st.sampled_from(["processId", "seq", "stream", "chunk", "other"]),
        st.one_of(
            st.just("p"),
            st.integers(0, 9),
            st.sampled_from(["stdout", "stderr", "nope"]),
            st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode()),
            st.sampled_from(["@@", "QQ", "\\/w==", "QUJD\\n"]),
            _json_scalars,
        ),
    ),
    max_size=7,
)


def _json_object(pairs: list[tuple[str, str]]) -> str:
    """Keys in the given order, duplicates kept (json.dumps would merge them)."""
    return "{" + ",".join(f"{json.dumps(key)}:{value}" for key, value in pairs) + "}"


@st.composite
def _output_like_frames(draw: st.DrawFn) -> tuple[str, bytes]:
    """Frames near a process/output notification: right or wrong method, fields in any
    order, missing, duplicated, mistyped, extra envelope fields, malformed text."""
    params = []
    if draw(st.integers(0, 3)):  # mostly complete and well typed
        base = {"processId": "p", "seq": 3, "stream": "stdout", "chunk": "QUJD"}
        params = [(key, json.dumps(value)) for key, value in base.items()]
    if not params or draw(st.booleans()):
        params += [(key, json.dumps(value)) for key, value in draw(_output_params_fields)]
    methods = ["process/output"] * 3 + ["process/exited", 7, None]
    envelope_fields = [("method", json.dumps(draw(st.sampled_from(methods))))]
    envelope_fields.append(("params", _json_object(params)))
    extra = st.sampled_from(["id", "method", "error", "trace", "result"])
    for key in draw(st.lists(extra, max_size=3)):
        value = draw(_json_scalars | st.just({"code": 1, "message": "m"}) | st.just([1]))
        envelope_fields.append((key, json.dumps(value)))
    if draw(st.integers(0, 3)) == 0:
        envelope_fields = draw(st.permutations(envelope_fields))
    text = _json_object(envelope_fields)
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]  # cut short: malformed
    codec = draw(st.sampled_from(["json", "msgpack"]))
    if codec == "json":
        return codec, text.encode()
    try:
        value = json.loads(text)  # msgpack: the same message as a map (last duplicate wins)
    except ValueError:
        return codec, text.encode()  # not msgpack at all
    chunk_text = value.get("params", {}).get("chunk") if isinstance(value, dict) else None
    if isinstance(chunk_text, str):
        try:
            value["params"]["chunk"] = base64.b64decode(chunk_text, validate=True)
        except ValueError:
            pass  # a str where bin belongs: a type error for the decoders
    return codec, msgspec.msgpack.encode(value)


@settings(max_examples=1000)
@given(_output_like_frames())
def test_one_pass_output_decode_agrees_with_the_general_path(frame: tuple[str, bytes]) -> None:
    """Whatever the one-pass decode accepts, the envelope-then-params path decodes the
    same; whatever that path rejects, the one-pass decode leaves to it (None)."""
    codec = JSON if frame[0] == "json" else MSGPACK
    fast = codec.decode_output_notification(frame[1])
    generic = _generic_output(codec, frame[1])
    if fast is not None:
        assert fast == generic
    if generic is None:
        assert fast is None


@pytest.mark.parametrize("codec", CODECS)
def test_one_pass_output_decode_leaves_other_messages_alone(codec: Codec) -> None:
    exited = wire.Notification(
        method="process/exited",
        params=wire.ProcessExitedParams(process_id="p", seq=2, exit_code=0),
    )
    assert codec.decode_output_notification(codec.encode(exited)) is None
    assert codec.decode_output_notification(b"") is None
    assert codec.decode_output_notification("text") is None
    # The later of two "method" keys is the one that counts.
    duplicate = (
        b'{"method":"process/output",'
        b'"params":{"processId":"p","seq":1,"stream":"stdout","chunk":""},"method":"x"}'
    )
    assert JSON.decode_output_notification(duplicate) is None
