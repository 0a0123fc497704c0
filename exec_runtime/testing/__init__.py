"""Test helpers for agent hosts (and for us): fault injection, in-memory stacks, and
scripted processes with self-checking output.

    from exec_runtime.testing import FaultPlan, open_faulty_local, scripted_argv, check_pattern

    plan = FaultPlan(seed=7, duplicate=0.2, reorder_window=4)
    async with open_faulty_local(plan) as (client, faults):
        proc = await client.start(scripted_argv(chunks=20, chunk_size=1000))
        ...
        faults.drop()            # cut the connection now; the client recovers
        faults.partition()       # ...and keep it away (the session is detached)
        faults.heal()
"""

from ._faults import Delivered, FaultController, FaultPlan, FaultyConnector, FaultyTransport
from ._proxy import FaultProxy, fault_proxy
from ._scripted import check_pattern, expected_output, scripted_argv
from ._stack import open_faulty_local

__all__ = [
    "Delivered",
    "FaultController",
    "FaultPlan",
    "FaultProxy",
    "FaultyConnector",
    "FaultyTransport",
    "check_pattern",
    "expected_output",
    "fault_proxy",
    "open_faulty_local",
    "scripted_argv",
]
