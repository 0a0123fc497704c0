"""The docs run: every ```python block of README.md and docs/*.md is executed, and the
README's error tree is the class hierarchy.

Each block runs in its own interpreter (tests/support/run_doc_block.py): a whole program
as ``__main__``; a fragment (top-level ``await``) inside Trio with ``trio``,
``exec_runtime``, ``nursery``, ``url`` (a fresh loopback daemon's) and ``client`` in
scope; then every ``test_*`` function the block defines is called. Its line numbers are
the document's, so a traceback points into the Markdown.

A block that cannot run here says why, in an HTML comment on the line before its fence
(blank lines between are allowed)::

    <!-- docs-test: skip: needs the Kubernetes Service it names -->

It is still compiled (``test_block_compiles``), so its syntax is checked.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import pytest
import trio

import exec_runtime
from exec_runtime import ExecRuntimeError, _errors

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUNNER = REPO / "tests" / "support" / "run_doc_block.py"
SKIP = re.compile(r"<!--\s*docs-test:\s*skip:\s*(?P<reason>.*?)\s*-->")
FENCE = re.compile(r"^```python\s*$")


@attrs.frozen
class Block:
    doc: Path
    line: int
    """The 1-based line of the block's first code line."""
    source: str
    skip: str | None
    """Why it does not run (the comment's text), or None."""

    @property
    def label(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"

    def padded(self) -> str:
        """The source behind blank lines, so its line numbers are the document's."""
        return "\n" * (self.line - 1) + self.source


def blocks_of(doc: Path) -> list[Block]:
    lines = doc.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        if not FENCE.match(lines[i]):
            i += 1
            continue
        before = i - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = SKIP.search(lines[before]) if before >= 0 else None
        end = i + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        assert end < len(lines), f"{doc.name}:{i + 1}: unclosed ```python block"
        source = "\n".join(lines[i + 1 : end]) + "\n"
        found.append(Block(doc, i + 2, source, marker["reason"] if marker else None))
        i = end + 1
    return found


BLOCKS = [block for doc in DOCS for block in blocks_of(doc)]


def test_the_blocks_are_found_and_every_skip_says_why() -> None:
    assert {b.doc.name for b in BLOCKS} >= {"README.md", "testing.md"}
    assert len([b for b in BLOCKS if b.skip is None]) >= 5
    for block in BLOCKS:
        assert block.skip is None or len(block.skip) >= 10, f"{block.label}: give a reason"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.label for b in BLOCKS])
def test_block_compiles(block: Block) -> None:
    compile(block.padded(), block.label, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(b, marks=[pytest.mark.skip(reason=b.skip)] if b.skip else [])
        for b in BLOCKS
    ],
    ids=[b.label for b in BLOCKS],
)
async def test_block_runs(block: Block, tmp_path: Path) -> None:
    code = block.padded()
    path = tmp_path / "block.py"
    path.write_text(code, encoding="utf-8")
    pythonpath = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": pythonpath}
    with trio.fail_after(120):
        done = await trio.run_process(
            [sys.executable, str(RUNNER), str(path)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, f"{block.label} failed:\n{output}"


def test_the_embedding_snippet_stops_its_daemon(tmp_path: Path) -> None:
    """Issue 16: the README's embedded-daemon snippet never returned (it showed no way
    to stop ``serve``). It must be a whole program that ends."""
    [snippet] = [b for b in BLOCKS if "nursery.start(exec_runtime.serve" in b.source]
    assert snippet.doc.name == "README.md" and snippet.skip is None
    assert "trio.run(main)" in snippet.source
    assert "nursery.cancel_scope.cancel()" in snippet.source
    # test_block_runs runs it (and fails if it hangs).


# ---------------------------------------------------------------------------
# The error tree

TREE_LINE = re.compile(r"^(?P<indent>[ │]*)[├└]── (?P<name>\w+)")


def parse_tree(text: str) -> dict[str, str | None]:
    """``{class name: its parent's name}`` from a box-drawing tree (root: None)."""
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in text.splitlines():
        if (root := re.match(r"^(\w+)\s*$", line)) is not None and not stack:
            stack = [root[1]]
            parents[root[1]] = None
            continue
        if (match := TREE_LINE.match(line)) is None:
            continue  # a continuation of the line above
        depth = len(match["indent"]) // 4 + 1
        del stack[depth:]
        assert len(stack) == depth, f"bad indentation: {line!r}"
        parents[match["name"]] = stack[-1]
        stack.append(match["name"])
    return parents


def actual_tree() -> dict[str, str | None]:
    """Each exported exception's closest exported ancestor under ExecRuntimeError."""
    classes = {
        name: obj
        for name in exec_runtime.__all__
        if isinstance(obj := getattr(exec_runtime, name), type)
        and issubclass(obj, ExecRuntimeError)
    }
    parents: dict[str, str | None] = {}
    for name, cls in classes.items():
        above = [other for other in classes.values() if other is not cls and issubclass(cls, other)]
        closest = [a for a in above if all(issubclass(a, b) for b in above)]
        parents[name] = closest[0].__name__ if closest else None
    return parents


def readme_tree() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^```\n(ExecRuntimeError\n.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert match is not None, "README.md has no error tree"
    return match[1]


def errors_module_tree() -> str:
    doc = _errors.__doc__ or ""
    match = re.search(r"::\n\n(.*?)\n\n", doc, re.DOTALL)
    assert match is not None, "_errors.py's docstring has no error tree"
    return textwrap.dedent(match[1])


def test_the_readme_error_tree_is_the_class_hierarchy() -> None:
    assert parse_tree(readme_tree()) == actual_tree()


def test_the_errors_module_tree_is_the_class_hierarchy() -> None:
    assert parse_tree(errors_module_tree()) == actual_tree()
