"""``client.fs``: the filesystem methods (filled in by the fs issue)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._client import ExecClient


class FsClient:
    def __init__(self, client: ExecClient) -> None:
        self._client = client
