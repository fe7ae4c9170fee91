"""Websocket text frames as a server writes them (RFC 6455 §5.2), encoded once per fan-out.

A server's frames are not masked, so the frame carrying a notification is the same bytes for
every connection it goes to (without extensions such as compression). The hub offers the same
frame string to each of them; :class:`FrameCache` turns it into frame bytes once and hands the
same bytes to every transport that writes directly to its socket.
"""

from __future__ import annotations

import struct

__all__ = ["FrameCache", "text_frame"]

_FIN_TEXT = 0x81


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying ``payload`` (already UTF-8)."""
    length = len(payload)
    if length < 126:
        return bytes((_FIN_TEXT, length)) + payload
    if length < 1 << 16:
        return struct.pack("!BBH", _FIN_TEXT, 126, length) + payload
    return struct.pack("!BBQ", _FIN_TEXT, 127, length) + payload


class FrameCache:
    """The frame of the last text encoded: a fan-out of one string encodes it once."""

    __slots__ = ("_frame", "_text")

    def __init__(self) -> None:
        self._text = ""
        self._frame = text_frame(b"")

    def frame(self, text: str) -> bytes:
        """The frame carrying ``text``."""
        if text is not self._text:
            self._frame = text_frame(text.encode())
            self._text = text
        return self._frame
