"""Client-side checks of what a host passes in, before anything is sent.

Every mistake is a ``TypeError`` (wrong type) or a ``ValueError`` (right type, bad
value) that names the argument, raised before ``process/start`` goes out: a start the
daemon would refuse half-way (or, worse, run with defaults) never begins.
"""

from __future__ import annotations

import math
import os
import signal as signal_module
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, get_args

import attrs

import protocol_schema as wire

__all__ = [
    "EnvPolicy",
    "check_bool",
    "check_bytes",
    "check_client_options",
    "check_int",
    "check_timeout",
    "check_tty_size",
    "env_policy_for_start",
    "signal_name",
    "start_fields",
]

InheritMode = Literal["all", "none", "core"]
_INHERIT_MODES: Final = get_args(InheritMode)
MAX_TTY_DIMENSION: Final = 0xFFFF


def _type_name(value: object) -> str:
    return type(value).__name__


def _check_text(value: object, what: str, *, utf8: bool = True) -> str:
    """A str without NUL; with ``utf8`` (all but paths, which travel %-escaped in
    URIs), one the wire's UTF-8 can carry."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {_type_name(value)}")
    if "\0" in value:
        raise ValueError(f"{what} must not contain NUL characters: {value!r}")
    if utf8:
        _check_utf8(value, what)
    return value


def _check_utf8(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Else the encoder's UnicodeEncodeError, which names no argument.
        raise ValueError(
            f"{what} cannot be sent: {value!r} holds a lone surrogate (os.fsdecode's escape "
            "for bytes that are not UTF-8), and the protocol's strings are UTF-8"
        ) from None


def _check_names(value: object, what: str) -> list[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a list of str, not {_type_name(value)}")
    return [_check_text(item, f"{what} item") for item in value]


def _check_env_mapping(value: object, what: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a mapping of str to str, not {_type_name(value)}")
    result: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str):
            raise TypeError(f"{what}: variable names must be str, not {_type_name(name)}")
        if not name or "=" in name or "\0" in name:
            raise ValueError(f"{what}: invalid variable name {name!r} (empty, '=' or NUL)")
        _check_utf8(name, f"{what}: variable name")
        if not isinstance(item, str):
            raise TypeError(f"{what}[{name!r}] must be a str, not {_type_name(item)}")
        if "\0" in item:
            raise ValueError(f"{what}[{name!r}] must not contain NUL characters")
        _check_utf8(item, f"{what}[{name!r}]")
        result[name] = item
    return result


def _inherit(value: object) -> InheritMode:
    if value not in _INHERIT_MODES or not isinstance(value, str):
        raise ValueError(
            f"EnvPolicy inherit must be one of {', '.join(map(repr, _INHERIT_MODES))}, "
            f"not {value!r}"
        )
    return value  # type: ignore[return-value]


def _names_tuple(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"EnvPolicy globs must be a list of str, not {_type_name(value)}")
    return tuple(value)


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a bool, not {_type_name(value)}")
    return value


_POLICY_KEYS: Final = {
    "inherit": "inherit",
    "ignore_default_excludes": "ignore_default_excludes",
    "ignoreDefaultExcludes": "ignore_default_excludes",
    "exclude": "exclude",
    "set": "set",
    "include_only": "include_only",
    "includeOnly": "include_only",
}


@attrs.frozen
class EnvPolicy:
    """How a child's environment is built from the daemon's (PROTOCOL §4 ``envPolicy``).

    ``inherit``: ``"all"`` (the daemon's environment), ``"core"`` (``HOME``, ``PATH``,
    ``USER``, ``LANG``, ... only) or ``"none"``; then names matching ``*KEY*``,
    ``*SECRET*``, ``*TOKEN*``, ``*PASSWORD*`` are dropped unless
    ``ignore_default_excludes``; then ``exclude`` (globs) are dropped; then ``set`` is
    applied; then, if ``include_only`` (globs) is not empty, only matching names stay.
    ``start(env=...)`` is applied last, over all of it.

    Checked when built: a wrong type is a ``TypeError``, a bad value a ``ValueError``.
    A plain dict is accepted too (:meth:`from_mapping`), with these names in snake_case
    or the wire's camelCase, and nothing else.
    """

    inherit: InheritMode = attrs.field(default="all", converter=_inherit)
    ignore_default_excludes: bool = False
    exclude: tuple[str, ...] = attrs.field(default=(), converter=_names_tuple)
    set: Mapping[str, str] = attrs.field(factory=dict)
    include_only: tuple[str, ...] = attrs.field(default=(), converter=_names_tuple)

    def __attrs_post_init__(self) -> None:
        _bool(self.ignore_default_excludes, "EnvPolicy ignore_default_excludes")
        _check_names(self.exclude, "EnvPolicy exclude")
        _check_names(self.include_only, "EnvPolicy include_only")
        object.__setattr__(self, "set", _check_env_mapping(self.set, "EnvPolicy set"))

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any]) -> EnvPolicy:
        """From a dict such as the wire's ``{"inherit": "core", "includeOnly": [...]}``;
        an unknown key is a ``ValueError`` naming it (never silently ignored)."""
        fields: dict[str, Any] = {}
        for key, item in value.items():
            name = _POLICY_KEYS.get(key) if isinstance(key, str) else None
            if name is None:
                valid = ", ".join(sorted(set(_POLICY_KEYS.values())))
                raise ValueError(
                    f"unknown env_policy key {key!r}; valid keys: {valid} "
                    "(or their camelCase wire names)"
                )
            if name in fields:
                raise ValueError(f"env_policy key {name!r} is given twice")
            fields[name] = item
        if "exclude" in fields:
            fields["exclude"] = _check_names(fields["exclude"], "EnvPolicy exclude")
        if "include_only" in fields:
            fields["include_only"] = _check_names(fields["include_only"], "EnvPolicy include_only")
        return cls(**fields)

    def to_wire(self) -> wire.EnvPolicy:
        return wire.EnvPolicy(
            inherit=self.inherit,
            ignore_default_excludes=self.ignore_default_excludes,
            exclude=list(self.exclude),
            set=dict(self.set),
            include_only=list(self.include_only),
        )


def env_policy_for_start(
    env: Mapping[str, str] | None, policy: EnvPolicy | wire.EnvPolicy | Mapping[str, Any] | None
) -> wire.EnvPolicy | None:
    """The wire policy for a start: ``policy`` checked, or inherit-all (minus secrets)
    when neither ``env`` nor a policy is given, or None (``env`` is exact)."""
    if isinstance(policy, EnvPolicy):
        return policy.to_wire()
    if isinstance(policy, wire.EnvPolicy):  # the wire struct does not check its fields
        return EnvPolicy(
            inherit=policy.inherit,
            ignore_default_excludes=policy.ignore_default_excludes,
            exclude=_check_names(policy.exclude, "EnvPolicy exclude"),
            set=policy.set,
            include_only=_check_names(policy.include_only, "EnvPolicy include_only"),
        ).to_wire()
    if isinstance(policy, Mapping):
        return EnvPolicy.from_mapping(policy).to_wire()
    if policy is not None:
        hint = f"; did you mean EnvPolicy(inherit={policy!r})?" if isinstance(policy, str) else ""
        raise TypeError(
            f"env_policy must be an EnvPolicy or a mapping, not {_type_name(policy)}{hint}"
        )
    if env is None:
        return wire.EnvPolicy(inherit="all")  # no env given: inherit, minus secrets
    return None


def _check_argv(argv: object) -> list[str]:
    if isinstance(argv, str | bytes | os.PathLike) or not isinstance(argv, Sequence):
        raise TypeError(
            f"argv must be a sequence of str (a list), not {_type_name(argv)}: "
            "write ['cmd', 'arg'] rather than 'cmd arg'"
        )
    result = []
    for index, arg in enumerate(argv):
        text = os.fspath(arg) if isinstance(arg, os.PathLike) else arg
        result.append(_check_text(text, f"argv[{index}]"))
    if not result:
        raise ValueError("argv must not be empty")
    return result


def _check_cwd(cwd: object) -> str | os.PathLike[str] | None:
    if cwd is None:
        return None
    text = os.fspath(cwd) if isinstance(cwd, os.PathLike) else cwd
    _check_text(text, "cwd", utf8=False)
    if not text:
        raise ValueError("cwd must not be empty (None means the daemon's cwd)")
    return cwd  # type: ignore[return-value]


def _check_tty_size(tty_size: object, tty: bool) -> tuple[int, int] | None:
    if tty_size is None:
        return None
    if not tty:
        raise ValueError("tty_size needs tty=True (a process without a tty has no size)")
    return check_tty_size(tty_size)


def check_tty_size(tty_size: object) -> tuple[int, int]:
    if isinstance(tty_size, str | bytes) or not isinstance(tty_size, Sequence):
        raise TypeError(f"tty_size must be a (rows, cols) tuple, not {_type_name(tty_size)}")
    if len(tty_size) != 2:
        raise ValueError(f"tty_size must be (rows, cols), got {len(tty_size)} values")
    for what, value in zip(("rows", "cols"), tty_size, strict=True):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"tty_size {what} must be an int, not {_type_name(value)}")
        if not 0 < value <= MAX_TTY_DIMENSION:
            raise ValueError(f"tty_size {what} must be between 1 and 65535, not {value}")
    return (tty_size[0], tty_size[1])


@attrs.frozen
class StartFields:
    argv: list[str]
    cwd: str | os.PathLike[str] | None
    env: dict[str, str] | None
    env_policy: wire.EnvPolicy | None
    tty_size: tuple[int, int] | None
    arg0: str | None


def start_fields(
    argv: object,
    *,
    cwd: object,
    env: object,
    env_policy: object,
    tty: object,
    pipe_stdin: object,
    process_id: object,
    tty_size: object,
    arg0: object,
) -> StartFields:
    """Check every argument of ``start()``; raise TypeError or ValueError naming it."""
    checked_argv = _check_argv(argv)
    checked_cwd = _check_cwd(cwd)
    checked_env = None if env is None else _check_env_mapping(env, "env")
    policy = env_policy_for_start(checked_env, env_policy)  # type: ignore[arg-type]
    _bool(tty, "tty")
    _bool(pipe_stdin, "pipe_stdin")
    if process_id is not None and not _check_text(process_id, "process_id"):
        raise ValueError("process_id must not be empty")
    size = _check_tty_size(tty_size, bool(tty))
    if arg0 is not None:
        _check_text(arg0, "arg0")
    return StartFields(checked_argv, checked_cwd, checked_env, policy, size, arg0)  # type: ignore[arg-type]


def check_bool(value: object, what: str) -> bool:
    return _bool(value, what)


def check_client_options(
    *,
    client_name: object,
    meter_provider: object,
    recovery_deadline: object = 25.0,
    ack_output: object = True,
    msgpack: object = True,
    ssl_context: object = None,
) -> None:
    """``open_client``'s and ``open_local``'s own arguments, checked before anything
    connects: a ``TypeError`` or ``ValueError`` naming the argument."""
    _check_text(client_name, "client_name")
    if meter_provider is not None and not callable(getattr(meter_provider, "get_meter", None)):
        raise TypeError(
            "meter_provider must be an OpenTelemetry MeterProvider, not "
            f"{_type_name(meter_provider)}"
        )
    if isinstance(recovery_deadline, bool) or not isinstance(recovery_deadline, int | float):
        raise TypeError(
            f"recovery_deadline must be a number of seconds, not {_type_name(recovery_deadline)}"
        )
    if not 0 <= recovery_deadline < math.inf:  # NaN fails both
        raise ValueError(f"recovery_deadline must be finite and >= 0, not {recovery_deadline!r}")
    _bool(ack_output, "ack_output")
    _bool(msgpack, "msgpack")
    # Duck-typed (what TLS needs of it): the pool passes a wrapper that names the host.
    if ssl_context is not None and not callable(getattr(ssl_context, "wrap_bio", None)):
        raise TypeError(f"ssl_context must be an ssl.SSLContext, not {_type_name(ssl_context)}")


def check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {_type_name(value)}")
    return value


def check_bytes(data: object, what: str) -> bytes:
    """``bytes``, ``bytearray`` or ``memoryview``; a ``str`` must be encoded first."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    hint = " (encode it: text.encode())" if isinstance(data, str) else ""
    raise TypeError(f"{what} must be bytes, not {_type_name(data)}{hint}")


def check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds, not {_type_name(timeout)}")
    try:
        seconds = float(timeout)
    except OverflowError:  # an int beyond a float's range: as good as infinite
        seconds = math.inf if timeout > 0 else -math.inf
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"timeout must be >= 0 seconds, not {timeout!r}")
    return seconds


_WIRE_SIGNALS: Final = {
    signal_module.SIGINT: "interrupt",
    signal_module.SIGTERM: "terminate",
    signal_module.SIGKILL: "kill",
    signal_module.SIGHUP: "hangup",
}
_VALID_SIGNALS: Final = (
    "signal.SIGINT, SIGTERM, SIGKILL, SIGHUP (or their numbers, their names such as "
    "'SIGTERM' or 'TERM', or the wire names 'interrupt', 'terminate', 'kill', 'hangup')"
)


def signal_name(sig: object) -> str:
    """The wire name for ``sig``: a ``signal.Signals``, an int, or a name (``"SIGTERM"``,
    ``"TERM"``, ``"terminate"``). The protocol carries only four signals; any other is
    a ``ValueError`` that lists them."""
    if isinstance(sig, str):
        text = sig.strip()
        if text.lower() in _WIRE_SIGNALS.values():
            return text.lower()
        upper = text.upper()
        found = getattr(signal_module, upper if upper.startswith("SIG") else "SIG" + upper, None)
        if not isinstance(found, signal_module.Signals):
            raise ValueError(f"unknown signal {sig!r}; valid: {_VALID_SIGNALS}")
        sig = found
    if isinstance(sig, bool) or not isinstance(sig, int):
        raise TypeError(f"a signal is a signal.Signals, an int or a str, not {_type_name(sig)}")
    try:
        number = signal_module.Signals(sig)
    except ValueError:
        raise ValueError(f"unknown signal number {sig}; valid: {_VALID_SIGNALS}") from None
    name = _WIRE_SIGNALS.get(number)
    if name is None:
        raise ValueError(
            f"{number.name} cannot be sent: the protocol carries only {_VALID_SIGNALS}"
        )
    return name
