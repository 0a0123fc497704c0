"""The client: ``ExecClient`` (client.py) with its process handles (process.py) and
``client.fs`` (fs.py); connecting (connect.py); argument checks done before any request
(args.py); the pool over many daemons (pool.py).

Never imports ``_daemon`` (``tests/test_layers.py``); the in-process runtime that joins
the two is ``exec_runtime/_local.py``.
"""
