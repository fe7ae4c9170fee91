"""Adapters turn a framework's websocket into a :class:`~notifykit.protocols.Transport` and
mount the endpoints: :mod:`notifykit.adapters.asgi` (Starlette, FastAPI, any ASGI server).

Adapters are the only layer that knows a web framework; the core never imports them.
"""
