"""``python -m protocol_schema [OUT]``: write the protocol's JSON Schema to OUT or stdout."""

from __future__ import annotations

import sys

from .schema import json_schema_text


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = json_schema_text()
    if args and args[0] != "-":
        with open(args[0], "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
