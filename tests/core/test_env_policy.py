"""build_child_env: properties against a tiny independent oracle, plus the rules by example."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from exec_runtime._core.env_policy import CORE_ENV_VARS, DEFAULT_EXCLUDES, build_child_env
from protocol_schema import EnvPolicy


def _glob_re(pattern: str) -> re.Pattern[str]:
    """Only ``*`` and ``?`` are generated, so a two-rule translation is a fair oracle."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.IGNORECASE | re.DOTALL)


def _oracle_match(name: str, patterns: list[str] | tuple[str, ...]) -> bool:
    return any(_glob_re(p).fullmatch(name) for p in patterns)


def _oracle(base: dict[str, str], env: dict[str, str], policy: EnvPolicy | None) -> dict[str, str]:
    if policy is None:
        return dict(env)

    def keep(name: str) -> bool:
        if policy.inherit == "none":
            return False
        if policy.inherit == "core" and name not in CORE_ENV_VARS:
            return False
        if not policy.ignore_default_excludes and _oracle_match(name, DEFAULT_EXCLUDES):
            return False
        if _oracle_match(name, policy.exclude):
            return False
        return not policy.include_only or _oracle_match(name, policy.include_only)

    out = {k: v for k, v in base.items() if keep(k)}
    return out | policy.set | env


_name_chars = "abkeyKEYtosecrpwdTOSECRPWD_AHLMNU1"
names = st.one_of(
    st.text(_name_chars, min_size=1, max_size=12),
    st.sampled_from(sorted(CORE_ENV_VARS)),
    st.sampled_from(["API_KEY", "my_secret", "GhToken", "Password", "path", "Home"]),
)
values = st.text(max_size=5)
envs = st.dictionaries(names, values, max_size=10)
globs = st.text(_name_chars + "*?", min_size=1, max_size=8)
policies = st.one_of(
    st.none(),
    st.builds(
        EnvPolicy,
        inherit=st.sampled_from(["all", "none", "core"]),
        ignore_default_excludes=st.booleans(),
        exclude=st.lists(globs, max_size=3),
        set=envs,
        include_only=st.lists(globs, max_size=3),
    ),
)


@given(base=envs, env=envs, policy=policies)
def test_matches_oracle(
    base: dict[str, str], env: dict[str, str], policy: EnvPolicy | None
) -> None:
    assert build_child_env(base, env, policy) == _oracle(base, env, policy)


@given(base=envs, env=envs, policy=policies)
def test_env_always_wins_and_inputs_untouched(
    base: dict[str, str], env: dict[str, str], policy: EnvPolicy | None
) -> None:
    base_copy, env_copy = dict(base), dict(env)
    result = build_child_env(base, env, policy)
    assert result.items() >= env.items()
    assert (base, env) == (base_copy, env_copy)


BASE = {
    "PATH": "/bin",
    "HOME": "/home/u",
    "OPENAI_API_KEY": "sk",
    "aws_secret_access": "s",
    "GitHub_Token": "t",
    "DB_PASSWORD": "p",
    "EDITOR": "vi",
    "LANG": "C.UTF-8",
}


def test_no_policy_is_exact_env() -> None:
    assert build_child_env(BASE, {"A": "1"}, None) == {"A": "1"}
    assert build_child_env(BASE, {}, None) == {}


def test_default_excludes_drop_secrets_case_insensitively() -> None:
    result = build_child_env(BASE, {}, EnvPolicy())
    assert result == {"PATH": "/bin", "HOME": "/home/u", "EDITOR": "vi", "LANG": "C.UTF-8"}


def test_ignore_default_excludes_keeps_them() -> None:
    assert build_child_env(BASE, {}, EnvPolicy(ignore_default_excludes=True)) == BASE


def test_inherit_modes() -> None:
    assert build_child_env(BASE, {}, EnvPolicy(inherit="none")) == {}
    core = build_child_env(BASE, {}, EnvPolicy(inherit="core", ignore_default_excludes=True))
    assert core == {"PATH": "/bin", "HOME": "/home/u", "LANG": "C.UTF-8"}


def test_exclude_glob_is_case_insensitive() -> None:
    result = build_child_env(BASE, {}, EnvPolicy(exclude=["edit*", "h?ME"]))
    assert result == {"PATH": "/bin", "LANG": "C.UTF-8"}


def test_include_only() -> None:
    policy = EnvPolicy(include_only=["path", "*_token"], ignore_default_excludes=True)
    assert build_child_env(BASE, {}, policy) == {"PATH": "/bin", "GitHub_Token": "t"}
    # Default excludes still apply before includeOnly.
    assert build_child_env(BASE, {}, EnvPolicy(include_only=["*TOKEN"])) == {}


def test_set_and_env_overlay_win_unfiltered() -> None:
    policy = EnvPolicy(
        inherit="none",
        exclude=["*"],
        include_only=["NOTHING"],
        set={"MY_TOKEN": "from-set", "PATH": "/set", "X": "set"},
    )
    result = build_child_env(BASE, {"X": "env", "Y": "env"}, policy)
    assert result == {"MY_TOKEN": "from-set", "PATH": "/set", "X": "env", "Y": "env"}
