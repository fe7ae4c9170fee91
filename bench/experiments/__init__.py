"""Bench-only patches that try a change to notifykit's hot path without touching notifykit/.

Each module has an ``install()`` that patches the imported notifykit in this process; a server
started with ``python -m bench.servers.nk --experiment NAME`` runs with it, and the benchmark
shows it as the variant ``notifykit+NAME``. They are measurements, not proposals of code.
"""
