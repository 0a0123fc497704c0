"""The ``exec-runtime`` command: ``serve``, ``run``, ``schema`` (main.py, run.py)."""
