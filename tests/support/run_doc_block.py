"""Run one Python code block of the docs (``python run_doc_block.py BLOCK.py``), as
tests/test_docs.py does for every block of README.md and docs/*.md.

A whole program (no top-level ``await``) runs as ``__main__``. A fragment (top-level
``await``, ``async with``) runs inside Trio with what the docs' fragments assume in
scope: ``trio``, ``exec_runtime``, ``nursery``, ``url`` (a fresh loopback daemon's) and
``client`` (an ``open_client(url)``); the daemon is stopped afterwards. Either way, every
``test_*`` function the block defines is then called (an async one under
``trio.run``), as pytest would, so a block that shows a test runs it.
"""

from __future__ import annotations

import ast
import inspect
import sys
from collections.abc import Callable
from typing import Any

import trio

import exec_runtime

TIMEOUT = 60.0
"""Seconds one fragment, or one async test of a block, may take (a hang fails)."""


def tests_of(namespace: dict[str, Any]) -> list[Callable[[], Any]]:
    return [
        f for name, f in namespace.items() if name.startswith("test_") and callable(f)
    ]


async def run_async_test(test: Callable[[], Any]) -> None:
    with trio.fail_after(TIMEOUT):
        await test()


def run_tests(namespace: dict[str, Any]) -> None:
    for test in tests_of(namespace):
        print(f"running {test.__name__}", file=sys.stderr)
        if inspect.iscoroutinefunction(test):
            trio.run(run_async_test, test)
        else:
            test()


async def run_fragment(code: Any) -> dict[str, Any]:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(exec_runtime.serve, exec_runtime.ServerConfig())
            async with exec_runtime.open_client(url) as client:
                namespace: dict[str, Any] = {
                    "__name__": "__main__",
                    "trio": trio,
                    "exec_runtime": exec_runtime,
                    "nursery": nursery,
                    "url": url,
                    "client": client,
                }
                await eval(code, namespace)
            nursery.cancel_scope.cancel()
    return namespace


def main(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        source = f.read()
    code = compile(source, path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if code.co_flags & inspect.CO_COROUTINE:
        namespace = trio.run(run_fragment, code)
    else:
        namespace = {"__name__": "__main__", "__file__": path}
        exec(code, namespace)
    run_tests(namespace)


if __name__ == "__main__":
    main(sys.argv[1])
