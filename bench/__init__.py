"""notifykit's benchmark: real servers, real Redis, real websocket clients (not a test).

Run ``python -m bench.run`` (``--quick`` for a short run); see ``docs/performance.md``.
``python -m bench.micro`` measures the in-process hot path.
"""
