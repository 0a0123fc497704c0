"""``serve``'s options from three layers, each on top of the one before:

1. a TOML file (``serve --config PATH``, or ``$EXEC_RUNTIME_CONFIG``): a flat table whose
   keys are the long options without ``--``, dashes as underscores
   (``--max-sessions`` is ``max_sessions = 256``; ``--no-orphan-watchdog`` is
   ``orphan_watchdog = false``); relative paths are relative to the file's directory;
2. the environment: ``EXEC_RUNTIME_`` + the key in capitals (``EXEC_RUNTIME_MAX_SESSIONS=256``,
   ``EXEC_RUNTIME_ORPHAN_WATCHDOG=false``, ``EXEC_RUNTIME_SANDBOX_MECHANISMS=bwrap,landlock``
   or ``none``); an empty variable counts as unset. ``$EXEC_RUNTIME_TOKEN`` holds the
   token itself (no file key: a file names ``token_file``);
3. the command line's flags.

cattrs structures every layer's values into the types of :class:`ServerConfig`'s fields
with strict hooks (a TOML string is no integer, 1.5 is no integer, ``1`` is no bool), and
the merged layers into the :class:`ServerConfig` itself. Each mistake is reported with
its source (the file, the variable, the flag), the key, and what was expected; an
unknown file key lists the valid ones. :class:`ConfigError` carries the message; the
CLI prints it and exits 2, as argparse does for a bad flag.
"""

from __future__ import annotations

import difflib
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import cattrs

from .._daemon.config import ServerConfig
from .._daemon.log_format import LOG_FORMATS
from .._daemon.metrics_export import otlp_endpoint_from_env

ENV_PREFIX: Final = "EXEC_RUNTIME_"
CONFIG_ENV: Final = "EXEC_RUNTIME_CONFIG"
TOKEN_ENV: Final = "EXEC_RUNTIME_TOKEN"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# ServerConfig fields that are no option of ``serve``: objects only an embedder can
# pass, the token (a secret: ``token_file`` or ``$EXEC_RUNTIME_TOKEN`` instead), internal
# tuning and test hooks.
NOT_OPTIONS: Final = frozenset(
    {"token", "tracer_provider", "meter_provider", "outbox_frames", "_start_delay"}
)
# Options of ``serve`` that are no ServerConfig field.
CLI_ONLY: Final[dict[str, Any]] = {"log_level": str, "log_format": str, "token_file": str}
# Keys whose relative value in a config file is taken relative to the file's directory.
PATH_KEYS: Final = frozenset({"token_file", "tls_cert", "tls_key", "bwrap_path"})
TRUE_WORDS: Final = ("1", "true", "yes", "on")
FALSE_WORDS: Final = ("0", "false", "no", "off")


class ConfigError(Exception):
    """A bad config file, variable or flag value; ``str()`` is the message to print."""


def _option_types() -> dict[str, Any]:
    attrs.resolve_types(ServerConfig)
    found = {
        field.name: field.type
        for field in attrs.fields(ServerConfig)
        if field.name not in NOT_OPTIONS
    }
    return dict(sorted({**found, **CLI_ONLY}.items()))


OPTIONS: Final = _option_types()
"""Every option ``serve`` takes from a file, the environment or a flag: its type."""


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


@attrs.frozen
class ServeOptions:
    config: ServerConfig
    log_level: str = "INFO"
    log_format: str = "text"


# --- strict structuring --------------------------------------------------------------


class _WrongType(Exception):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def _int(value: object, _: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _WrongType("an integer")
    return value


def _float(value: object, _: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _WrongType("a number")
    return float(value)


def _bool(value: object, _: object) -> bool:
    if not isinstance(value, bool):
        raise _WrongType("true or false")
    return value


def _str(value: object, _: object) -> str:
    if not isinstance(value, str):
        raise _WrongType("a string")
    return value


def _strings(value: object, _: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _WrongType("a list of strings")
    return tuple(value)


converter: Final = cattrs.Converter(forbid_extra_keys=True)
for _type, _hook in ((int, _int), (float, _float), (bool, _bool), (str, _str)):
    converter.register_structure_hook(_type, _hook)
converter.register_structure_hook_func(lambda kind: kind == tuple[str, ...], _strings)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a bool"
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _not_none(annotation: Any) -> Any:
    """``str | None`` -> ``str``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (inner,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return inner
    return annotation


_FIELDS: Final = {field.name: field for field in attrs.fields(ServerConfig)}


def _check(key: str, value: object) -> object:
    """``value`` structured to ``key``'s type and checked as ServerConfig checks it;
    raises ConfigError with the problem, not yet its source."""
    try:
        value = converter.structure(value, _not_none(OPTIONS[key]))
    except _WrongType as exc:
        got = f"{value!r} ({_kind(value)})"
        raise ConfigError(f"{key}: expected {exc.expected}, got {got}") from None
    if key == "log_level":
        if str(value).upper() not in LOG_LEVELS:
            raise ConfigError(
                f"log_level: expected one of {', '.join(LOG_LEVELS)} (any case), got {value!r}"
            )
        value = str(value).upper()
    elif key == "log_format" and value not in LOG_FORMATS:
        raise ConfigError(f"log_format: expected one of {', '.join(LOG_FORMATS)}, got {value!r}")
    field = _FIELDS.get(key)
    if field is not None:
        if field.converter is not None:
            value = field.converter(value)  # type: ignore[operator]
        if field.validator is not None:
            try:
                field.validator(None, field, value)
            except ValueError as exc:
                text = str(exc)
                raise ConfigError(text if text.startswith(key) else f"{key}: {text}") from None
    return value


def _checked(source: str, values: Mapping[str, object]) -> dict[str, object]:
    """Every value of one layer checked; every problem reported at once."""
    problems: list[str] = []
    checked: dict[str, object] = {}
    for key, value in values.items():
        try:
            checked[key] = _check(key, value)
        except ConfigError as exc:
            problems.append(f"{source}: {exc}")
    if problems:
        raise ConfigError("\n".join(problems))
    return checked


# --- the layers ----------------------------------------------------------------------


def read_config_file(path: str) -> dict[str, object]:
    """The options of a TOML file, checked; relative paths made relative to it."""
    try:
        with open(path, "rb") as file:
            raw = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = [key for key in raw if key not in OPTIONS]
    if unknown:
        lines = []
        for key in unknown:
            close = difflib.get_close_matches(key, OPTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"{path}: unknown key {key!r}{hint}")
        lines.append(f"{path}: valid keys: {', '.join(OPTIONS)}")
        raise ConfigError("\n".join(lines))
    values = _checked(path, raw)
    base = Path(path).parent
    for key in PATH_KEYS & values.keys():
        values[key] = os.path.normpath(base / str(values[key]))
    return values


def _from_text(key: str, text: str) -> object:
    """A variable's text as the value of ``key``'s type (then checked as any value)."""
    kind = _not_none(OPTIONS[key])
    try:
        if kind is bool:
            word = text.strip().lower()
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
            raise ConfigError(
                f"expected one of {', '.join(TRUE_WORDS + FALSE_WORDS)}, got {text!r}"
            )
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind == tuple[str, ...]:
            if text.strip() == "none":
                return ()
            return tuple(part.strip() for part in text.split(",") if part.strip())
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise ConfigError(f"expected {expected}, got {text!r}") from None
    return text


def read_environment(environ: Mapping[str, str]) -> dict[str, object]:
    """``EXEC_RUNTIME_<KEY>`` for every option key, checked. Other ``EXEC_RUNTIME_*``
    variables are not ours to judge (the test suite's switches, say) and are ignored."""
    problems: list[str] = []
    values: dict[str, object] = {}
    for key in OPTIONS:
        text = environ.get(env_name(key), "")
        if not text:
            continue
        try:
            values[key] = _check(key, _from_text(key, text))
        except ConfigError as exc:
            message = str(exc).removeprefix(f"{key}: ")
            problems.append(f"{env_name(key)}: {message}")
    if problems:
        raise ConfigError("\n".join(problems))
    return values


def consumed_variables() -> list[str]:
    """The variables ``serve`` reads: removed from its environment once read, so the
    processes it runs do not inherit the token or the daemon's own configuration."""
    return [CONFIG_ENV, TOKEN_ENV, *(env_name(key) for key in OPTIONS)]


def _flag(key: str) -> str:
    return "--no-orphan-watchdog" if key == "orphan_watchdog" else "--" + key.replace("_", "-")


def load(
    flags: Mapping[str, object],
    environ: Mapping[str, str],
    *,
    config_path: str | None = None,
    read_token: Callable[[str], str] | None = None,
) -> ServeOptions:
    """``serve``'s options: defaults, then the file, the environment, the flags.

    ``flags`` holds only the options given on the command line (keys as in the file);
    ``config_path`` is ``--config`` (default ``$EXEC_RUNTIME_CONFIG``). ``read_token``
    reads a token file (the CLI's warns about a file others can read).
    """
    path = config_path or environ.get(CONFIG_ENV) or None
    from_file = read_config_file(path) if path else {}
    from_env = read_environment(environ)
    from_flags: dict[str, object] = {}
    problems = []
    for key, value in flags.items():
        try:
            from_flags[key] = _check(key, value)
        except ConfigError as exc:
            problems.append(f"{_flag(key)}: {exc}")
    if problems:
        raise ConfigError("\n".join(problems))
    merged = {**from_file, **from_env, **from_flags}

    log_level = str(merged.pop("log_level", "INFO"))
    log_format = str(merged.pop("log_format", "text"))
    token_file = merged.pop("token_file", None)
    env_token = environ.get(TOKEN_ENV)
    if "token_file" not in from_flags and "token_file" in from_env and env_token is not None:
        raise ConfigError(f"set {TOKEN_ENV} or {env_name('token_file')}, not both")
    token: str | None = None
    if token_file is not None and ("token_file" in from_flags or "token_file" in from_env):
        token = (read_token or _read_token_file)(str(token_file))
    elif env_token is not None:
        if not env_token.strip():
            raise ConfigError(f"{TOKEN_ENV} is set but empty")
        token = env_token.strip()
    elif token_file is not None:
        token = (read_token or _read_token_file)(str(token_file))
    if "metrics_otlp_endpoint" not in merged:
        merged["metrics_otlp_endpoint"] = otlp_endpoint_from_env(dict(environ))
    try:
        config = converter.structure({**merged, "token": token}, ServerConfig)
    except cattrs.BaseValidationError as exc:
        # Every value was checked already: what is left is a rule over several
        # options (``tls_key needs tls_cert``), which ServerConfig raises as ValueError.
        plain = [str(e) for e in exc.exceptions if not isinstance(e, cattrs.BaseValidationError)]
        raise ConfigError("\n".join(plain) or "; ".join(cattrs.transform_error(exc))) from None
    return ServeOptions(config, log_level=log_level, log_format=log_format)


def _read_token_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            token = file.read().strip()
    except OSError as exc:
        raise ConfigError(f"token file {path}: {exc.strerror or exc}") from None
    if not token:
        raise ConfigError(f"token file {path} is empty")
    return token
