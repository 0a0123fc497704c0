"""Write-id dedupe for ``process/write`` (PROTOCOL §4).

A client re-sends a write with the same ``writeId`` after a reconnect when it cannot know
whether the first attempt landed; remembering recent ids makes the retry a no-op.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["DEFAULT_WRITE_ID_CAPACITY", "WriteIdMemory"]

DEFAULT_WRITE_ID_CAPACITY = 4096
"""How many accepted write ids the daemon remembers per process."""


class WriteIdMemory:
    """The last ``capacity`` accepted write ids of one process, oldest evicted first.

    A duplicate does not refresh an id's age: the window counts accepted writes, and a
    duplicate is not a new write. The wire bounds each id (``writeId`` is at most
    ``protocol_schema.MAX_WRITE_ID_LENGTH`` characters, checked when the params are
    decoded), so this holds at most ``capacity`` times that.
    """

    __slots__ = ("_capacity", "_ids")

    def __init__(self, capacity: int = DEFAULT_WRITE_ID_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        # OrderedDict, not dict: popping the oldest is O(1) without leaving holes to scan.
        self._ids: OrderedDict[str, None] = OrderedDict()

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, write_id: object) -> bool:
        return write_id in self._ids

    def remember(self, write_id: str) -> bool:
        """Record ``write_id``; True if it is new (write the bytes), False if it is a
        duplicate of a remembered id (answer ``accepted``, write nothing)."""
        if write_id in self._ids:
            return False
        self._ids[write_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True
