"""``exec-runtime run``: placeholder until the client lands."""

from __future__ import annotations

import argparse
from typing import Any


def add_run_parser(sub: Any) -> None:
    p_run = sub.add_parser("run", help="run one command and stream its output")
    p_run.add_argument("argv", nargs=argparse.REMAINDER)


def run_main(args: argparse.Namespace) -> int:
    raise NotImplementedError
