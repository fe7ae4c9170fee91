"""Adapters turn a framework's websocket into a :class:`~notifykit.protocols.Transport` and
mount the endpoints; everything else stays in the gateway and the hub.

* :mod:`notifykit.adapters.asgi` — Starlette, FastAPI, any ASGI server (``NotifyApp``), and
  ``ConnectionAuthenticator`` for logins by the app's own session.
* :mod:`notifykit.adapters.channels` — Django Channels (``NotifyConsumer``,
  ``ChannelsUserAuthenticator``, ``HubLifespan``); needs the ``channels`` extra.
* :mod:`notifykit.adapters.websockets` — a plain ``websockets`` server (``serve``,
  ``NotifyHandler``); needs the ``websockets`` extra.

Each passes the same end-to-end contract suite (``tests/test_adapter_contract.py``). Adapters
are the only layer that knows a web framework; the core never imports them. Import each by its
own module: importing this package imports no framework.
"""
