"""Where a pool starts a new process (sans-IO: no trio, no sockets, no clock).

The pool (``exec_runtime/_client/pool.py``) keeps, for each endpoint, whether it can take work
now and how many of the pool's processes run there; this module decides:

- only an *eligible* endpoint takes a new process: healthy (its ``/readyz`` answers and
  its client is connected, not recovering) and still present in the latest resolution
  (one that left it only drains what it runs);
- among those, the least loaded (the pool's own count of its running processes), ties
  broken at random with the injected ``random.Random``;
- an affinity key is pinned to the endpoint its first process went to, and later
  processes with that key go there and only there: while it is not eligible they wait
  (a workspace lives on one host; placing them elsewhere would run them in another
  workspace). A key whose endpoint the pool has forgotten (it left the resolution and
  drained) is pinned anew.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import attrs


@attrs.frozen
class EndpointView:
    """What the policy needs to know about one endpoint, at one moment."""

    name: str
    healthy: bool
    load: int
    present: bool = True
    """In the latest resolution; False once it left (it drains, it takes nothing new)."""

    @property
    def eligible(self) -> bool:
        return self.healthy and self.present


@attrs.frozen
class Placement:
    """The decision: ``endpoint``, or None with ``reason`` (the caller waits or fails)."""

    endpoint: str | None
    reason: str = ""


class PlacementPolicy:
    """Least loaded among eligible endpoints, random ties, sticky affinity keys."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._pins: dict[str, str] = {}

    def pinned(self, key: str) -> str | None:
        """The endpoint ``key`` is pinned to, if any."""
        return self._pins.get(key)

    @property
    def pins(self) -> dict[str, str]:
        """A copy of every affinity key's endpoint."""
        return dict(self._pins)

    def forget_affinity(self, key: str) -> None:
        """Unpin ``key``: its next process is placed as a new one."""
        self._pins.pop(key, None)

    def forget_endpoint(self, name: str) -> list[str]:
        """Unpin every key pinned to ``name`` (it is gone for good); returns those keys."""
        keys = [key for key, endpoint in self._pins.items() if endpoint == name]
        for key in keys:
            del self._pins[key]
        return keys

    def place(self, endpoints: Iterable[EndpointView], affinity: str | None = None) -> Placement:
        """Choose the endpoint for one new process (and pin ``affinity`` to it).

        Does not count the process: the caller adds it to the endpoint's load.
        """
        views = {view.name: view for view in endpoints}
        if affinity is not None and (pinned := self._pins.get(affinity)) is not None:
            view = views.get(pinned)
            if view is not None:
                if view.eligible:
                    return Placement(pinned)
                why = "not ready" if view.present else "leaving the pool"
                return Placement(
                    None, f"endpoint {pinned} (pinned by affinity {affinity!r}) is {why}"
                )
            del self._pins[affinity]  # its endpoint is no longer known: pin anew
        eligible = [view for view in views.values() if view.eligible]
        if not eligible:
            if not views:
                return Placement(None, "no endpoints (the names resolved to no address)")
            return Placement(None, f"none of the {len(views)} endpoints is ready")
        least = min(view.load for view in eligible)
        # Sorted, so that a seeded rng makes the same choice whatever the input order.
        ties = sorted(view.name for view in eligible if view.load == least)
        chosen = ties[0] if len(ties) == 1 else self._rng.choice(ties)
        if affinity is not None:
            self._pins[affinity] = chosen
        return Placement(chosen)


__all__ = ["EndpointView", "Placement", "PlacementPolicy"]
