"""Adapters turn a framework's websocket into :class:`~notifykit.protocols.Transport`."""
