"""Build a child's environment from the daemon's own and a start request (PROTOCOL §4).

Pure: the daemon passes its environment in, so tests need no real ``os.environ``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from fnmatch import translate
from functools import lru_cache

from protocol_schema import EnvPolicy

__all__ = ["CORE_ENV_VARS", "DEFAULT_EXCLUDES", "build_child_env", "matches_any"]

CORE_ENV_VARS: frozenset[str] = frozenset(
    {
        "HOME",
        "LOGNAME",
        "PATH",
        "SHELL",
        "USER",
        "USERNAME",
        "TMPDIR",
        "TEMP",
        "TMP",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "TERM",
    }
)
"""What ``inherit: "core"`` keeps: enough for a shell to find programs, a home, a temp
dir and a locale, and nothing application-specific. Names match exactly (not globs)."""

DEFAULT_EXCLUDES: tuple[str, ...] = ("*KEY*", "*SECRET*", "*TOKEN*", "*PASSWORD*")
"""Globs dropped unless ``ignoreDefaultExcludes``, so credentials don't leak by default."""


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    """Whether ``name`` matches one of the globs, ignoring case (the protocol says globs
    are case-insensitive on every platform, so both sides are upper-cased and matched
    with ``fnmatchcase`` rather than the OS-dependent ``fnmatch``)."""
    return _compiled(tuple(patterns)).match(name.upper()) is not None


@lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...]) -> re.Pattern[str]:
    # One regex for all globs, built once per pattern set: env building runs per start.
    if not patterns:
        return re.compile(r"(?!)")
    return re.compile("|".join(f"(?:{translate(p.upper())})" for p in patterns))


def build_child_env(
    base_env: Mapping[str, str],
    env: Mapping[str, str],
    policy: EnvPolicy | None,
) -> dict[str, str]:
    """The child's environment.

    Without a policy ``env`` is the exact environment. With one, ``base_env`` (the
    daemon's own) is filtered by ``inherit``, then the default excludes (unless
    ignored), then ``exclude``, then ``includeOnly``; ``set`` and then ``env`` are
    overlaid last, unfiltered, because the client asked for them explicitly.
    """
    if policy is None:
        return dict(env)
    result = inherited_env(base_env, policy)
    result.update(policy.set)
    result.update(env)
    return result


def inherited_env(base_env: Mapping[str, str], policy: EnvPolicy) -> dict[str, str]:
    """What ``policy`` keeps of ``base_env`` before its ``set`` and the explicit ``env``
    are overlaid: depends only on the base and the policy's filters, so it can be cached."""
    if policy.inherit == "all":
        result = dict(base_env)
    elif policy.inherit == "core":
        result = {k: v for k, v in base_env.items() if k in CORE_ENV_VARS}
    else:
        result = {}

    if not policy.ignore_default_excludes:
        result = {k: v for k, v in result.items() if not matches_any(k, DEFAULT_EXCLUDES)}
    if policy.exclude:
        result = {k: v for k, v in result.items() if not matches_any(k, policy.exclude)}
    if policy.include_only:
        result = {k: v for k, v in result.items() if matches_any(k, policy.include_only)}
    return result
