"""The daemon: ``serve`` (server.py) accepts connections; a connection (connection.py)
decodes requests and dispatches them to its session (session.py), which owns the
processes; each process (managed.py) is an OS child (child.py) whose events a
sequencer (sequencer.py) numbers and pushes; ``fs/*`` is fs_service.py. The sandbox
enforcer is ``sandbox/``; limits and memory budgets are config.py, budget.py, fds.py.

Never imports ``_client`` (``tests/test_layers.py``).
"""
