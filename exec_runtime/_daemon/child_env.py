"""The child environment built from the daemon's own, with the filtering cached.

Filtering the daemon's environment by a policy's globs costs about 100 µs per start
(decoding ``os.environ`` and matching every name), and almost every start asks for
the same policy of the same, unchanged environment. The cache is keyed on the policy's
filters and dropped whenever ``os.environ`` changed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from protocol_schema import EnvPolicy

from .._core.env_policy import build_child_env, inherited_env

_MAX_ENTRIES: Final = 64

_FilterKey = tuple[str, bool, tuple[str, ...], tuple[str, ...]]


class DaemonEnvironment:
    def __init__(self) -> None:
        self._snapshot: dict[bytes, bytes] | None = None
        self._inherited: dict[_FilterKey, dict[str, str]] = {}

    def child_env(self, env: Mapping[str, str], policy: EnvPolicy | None) -> dict[str, str]:
        """``build_child_env(os.environ, env, policy)``, but cheap on a repeat."""
        # CPython's os.environ keeps its encoded items in ``_data``: comparing that
        # dict with a copy is a fast way to notice a change (no decoding).
        raw = getattr(os.environ, "_data", None)
        if policy is None or not isinstance(raw, dict):
            return build_child_env(os.environ, env, policy)
        if raw != self._snapshot:
            self._snapshot = dict(raw)
            self._inherited.clear()
        key = (
            policy.inherit,
            policy.ignore_default_excludes,
            tuple(policy.exclude),
            tuple(policy.include_only),
        )
        inherited = self._inherited.get(key)
        if inherited is None:
            if len(self._inherited) >= _MAX_ENTRIES:
                self._inherited.clear()
            inherited = self._inherited[key] = inherited_env(os.environ, policy)
        result = dict(inherited)
        result.update(policy.set)
        result.update(env)
        return result
