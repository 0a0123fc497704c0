"""The pool's placement policy (``exec_runtime/_core/placement.py``): least loaded among
eligible endpoints, random ties from the injected rng, sticky affinity, health filter."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from exec_runtime._core.placement import EndpointView, Placement, PlacementPolicy

NAMES = [f"ws://198.18.0.{i}:7000" for i in range(1, 7)]

views_strategy = st.lists(
    st.builds(
        EndpointView,
        name=st.sampled_from(NAMES),
        healthy=st.booleans(),
        load=st.integers(0, 5),
        present=st.booleans(),
    ),
    unique_by=lambda view: view.name,
    max_size=len(NAMES),
)


@given(views=views_strategy, seed=st.integers(0, 2**32 - 1))
def test_places_on_a_least_loaded_eligible_endpoint_or_nowhere(
    views: list[EndpointView], seed: int
) -> None:
    placement = PlacementPolicy(random.Random(seed)).place(views)
    eligible = [view for view in views if view.healthy and view.present]
    if not eligible:
        assert placement.endpoint is None
        assert placement.reason
        return
    chosen = next(view for view in views if view.name == placement.endpoint)
    assert chosen.eligible
    assert chosen.load == min(view.load for view in eligible)


@given(views=views_strategy, seed=st.integers(0, 2**32 - 1))
def test_a_seeded_rng_decides_the_same_whatever_the_order(
    views: list[EndpointView], seed: int
) -> None:
    first = PlacementPolicy(random.Random(seed)).place(views)
    again = PlacementPolicy(random.Random(seed)).place(list(reversed(views)))
    assert first == again


def test_ties_are_broken_at_random_over_every_tied_endpoint() -> None:
    views = [EndpointView(name, healthy=True, load=1) for name in NAMES[:3]]
    views.append(EndpointView(NAMES[3], healthy=True, load=2))
    policy = PlacementPolicy(random.Random(7))
    picks = Counter(policy.place(views).endpoint for _ in range(300))
    assert set(picks) == set(NAMES[:3])  # never the busier one
    assert min(picks.values()) > 50  # each tied one about a third of the time


@given(
    healthy=st.lists(st.booleans(), min_size=1, max_size=len(NAMES)),
    count=st.integers(1, 60),
    seed=st.integers(0, 2**32 - 1),
)
def test_placing_and_counting_keeps_the_healthy_endpoints_level(
    healthy: list[bool], count: int, seed: int
) -> None:
    policy = PlacementPolicy(random.Random(seed))
    loads = dict.fromkeys(NAMES[: len(healthy)], 0)
    health = dict(zip(NAMES, healthy, strict=False))
    for _ in range(count):
        views = [EndpointView(name, health[name], load) for name, load in loads.items()]
        endpoint = policy.place(views).endpoint
        if not any(healthy):
            assert endpoint is None
            return
        assert endpoint is not None and health[endpoint]
        loads[endpoint] += 1
    levels = [load for name, load in loads.items() if health[name]]
    assert max(levels) - min(levels) <= 1
    assert all(load == 0 for name, load in loads.items() if not health[name])


@given(
    views=views_strategy.filter(lambda views: any(v.eligible for v in views)),
    steps=st.lists(st.tuples(st.booleans(), st.integers(0, 5)), max_size=10),
    seed=st.integers(0, 2**32 - 1),
)
def test_an_affinity_key_stays_on_its_endpoint_and_waits_while_it_is_down(
    views: list[EndpointView], steps: list[tuple[bool, int]], seed: int
) -> None:
    policy = PlacementPolicy(random.Random(seed))
    pinned = policy.place(views, affinity="agent-1").endpoint
    assert pinned is not None and policy.pinned("agent-1") == pinned
    for healthy, load in steps:
        # The pinned endpoint goes up and down and gets busier; others stay as they are.
        views = [EndpointView(v.name, healthy, load) if v.name == pinned else v for v in views]
        placement = policy.place(views, affinity="agent-1")
        if healthy:
            assert placement.endpoint == pinned
        else:
            assert placement.endpoint is None
            assert pinned in placement.reason and "agent-1" in placement.reason
        assert policy.pinned("agent-1") == pinned


def test_a_key_whose_endpoint_left_is_pinned_anew() -> None:
    policy = PlacementPolicy(random.Random(1))
    a, b = NAMES[:2]
    assert policy.place([EndpointView(a, True, 0)], affinity="k").endpoint == a
    # Still known but leaving (dropped from the resolution, draining): wait for it.
    leaving = policy.place([EndpointView(a, True, 0, present=False), EndpointView(b, True, 5)], "k")
    assert leaving.endpoint is None and "leaving" in leaving.reason
    # Gone from the pool's endpoints: pinned again, to what is there.
    assert policy.place([EndpointView(b, True, 5)], affinity="k").endpoint == b
    assert policy.pinned("k") == b


def test_forget_endpoint_and_forget_affinity_unpin() -> None:
    policy = PlacementPolicy(random.Random(1))
    a, b = NAMES[:2]
    for key in ("x", "y"):
        assert policy.place([EndpointView(a, True, 0)], affinity=key).endpoint == a
    assert policy.place([EndpointView(b, True, 0)], affinity="z").endpoint == b
    assert sorted(policy.forget_endpoint(a)) == ["x", "y"]
    assert policy.pins == {"z": b}
    policy.forget_affinity("z")
    policy.forget_affinity("never-pinned")
    assert policy.pins == {}


def test_no_endpoints_gives_a_reason() -> None:
    placement = PlacementPolicy().place([])
    assert placement.endpoint is None and "no endpoints" in placement.reason
    down = PlacementPolicy().place([EndpointView(NAMES[0], healthy=False, load=0)])
    assert down.endpoint is None and "none of the 1" in down.reason


def test_the_reasons_for_placing_nowhere() -> None:
    a, b = NAMES[:2]
    policy = PlacementPolicy(random.Random(1))
    assert policy.place([]) == Placement(None, "no endpoints (the names resolved to no address)")
    down = [EndpointView(a, healthy=False, load=0), EndpointView(b, True, 0, present=False)]
    assert policy.place(down) == Placement(None, "none of the 2 endpoints is ready")
    assert policy.place([EndpointView(a, True, 0)], affinity="k") == Placement(a)
    unhealthy = [EndpointView(a, healthy=False, load=0), EndpointView(b, True, 0)]
    assert policy.place(unhealthy, affinity="k") == Placement(
        None, f"endpoint {a} (pinned by affinity 'k') is not ready"
    )
    leaving = [EndpointView(a, True, 0, present=False), EndpointView(b, True, 0)]
    assert policy.place(leaving, affinity="k") == Placement(
        None, f"endpoint {a} (pinned by affinity 'k') is leaving the pool"
    )


def test_without_an_injected_rng_ties_are_still_broken() -> None:
    policy = PlacementPolicy()
    views = [EndpointView(name, healthy=True, load=0) for name in NAMES[:2]]
    picks = {policy.place(views).endpoint for _ in range(200)}
    assert picks == set(NAMES[:2])


def test_two_tied_endpoints_are_each_chosen() -> None:
    views = [EndpointView(name, healthy=True, load=0) for name in NAMES[:2]]
    for seed in range(20):
        chosen = PlacementPolicy(random.Random(seed)).place(views).endpoint
        assert chosen == random.Random(seed).choice(sorted(NAMES[:2]))
    policy = PlacementPolicy(random.Random(3))
    picks = Counter(policy.place(views).endpoint for _ in range(200))
    assert set(picks) == set(NAMES[:2]) and min(picks.values()) > 50


def test_only_ties_draw_from_the_rng() -> None:
    """A placement without a tie leaves the injected rng alone, so a seeded pool's tie
    breaks depend on its ties only."""
    a, b = NAMES[:2]
    tied = [EndpointView(a, True, 0), EndpointView(b, True, 0)]
    for seed in range(20):
        rng = random.Random(seed)
        policy = PlacementPolicy(rng)
        state = rng.getstate()
        assert policy.place([EndpointView(a, True, 0), EndpointView(b, True, 1)]) == Placement(a)
        assert policy.place([EndpointView(b, True, 0)]) == Placement(b)
        assert rng.getstate() == state
        assert policy.place(tied) == PlacementPolicy(random.Random(seed)).place(tied)
