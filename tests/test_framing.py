"""Server text frames encoded once per fan-out: byte for byte what websockets' own sans-I/O
protocol writes, for every length encoding."""

from __future__ import annotations

import json

import pytest
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol
from websockets.server import ServerProtocol

from notifykit.adapters._framing import FrameCache, text_frame


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 200_000])
def test_a_frame_is_what_the_websockets_protocol_would_write(size: int) -> None:
    text = "é" * (size // 2) + "x" * (size % 2)
    protocol: Protocol = ServerProtocol()
    protocol.state = protocol.state.OPEN
    protocol.send_text(text.encode())
    assert text_frame(text.encode()) == b"".join(protocol.data_to_send())


def test_the_cache_reuses_the_frame_of_the_same_string_only() -> None:
    cache = FrameCache()
    text = json.dumps({"type": "notification", "n": 1})
    first = cache.frame(text)
    assert cache.frame(text) is first
    equal_but_other = "".join(text)  # an equal string built anew
    assert cache.frame(equal_but_other) == first
    assert Frame(Opcode.TEXT, text.encode()).serialize(mask=False) == first
