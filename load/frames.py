"""A fast reader for the server-to-client half of a WebSocket stream.

At saturation a client worker receives hundreds of thousands of frames per second, and
websockets' general-purpose parser (a generator per frame, an assembler, a queue, a
``recv()`` future) costs the worker more CPU per frame than the server spends sending
it, so the generator, not the server, would set the limit. Server frames are never
masked (RFC 6455, section 5.1), so splitting them is a few slices. Data frames go
straight to the measurement; control frames (ping, pong, close) are handed back whole,
at a frame boundary, to websockets' own protocol, which answers and closes as usual.
"""

from __future__ import annotations

from collections.abc import Callable

#: A frame larger than this is a broken stream, not a message (pushhub caps at 64 KiB).
MAX_FRAME = 16 * 1024 * 1024


class FrameError(ValueError):
    """The byte stream is not a valid server-to-client WebSocket stream."""


class FrameSplitter:
    """Feed bytes in; complete data messages go to ``on_data``, control frames to
    ``on_control`` (header included). Fragmented messages are reassembled."""

    __slots__ = ("_buf", "_fragments", "_on_control", "_on_data")

    def __init__(
        self, on_data: Callable[[bytes], None], on_control: Callable[[bytes], None]
    ) -> None:
        self._on_data = on_data
        self._on_control = on_control
        self._buf = b""
        self._fragments: list[bytes] = []

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        pos, end = 0, len(buf)
        while end - pos >= 2:
            head, size = buf[pos], buf[pos + 1]
            if size & 0x80:
                raise FrameError("a server frame is masked")
            size &= 0x7F
            header = 2
            if size == 126:
                if end - pos < 4:
                    break
                size, header = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif size == 127:
                if end - pos < 10:
                    break
                size, header = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
                if size > MAX_FRAME:
                    raise FrameError(f"a frame of {size} bytes")
            stop = pos + header + size
            if stop > end:
                break
            if head & 0x08:  # opcodes 8-15 are control frames
                self._on_control(buf[pos:stop])
            elif head & 0x80:  # FIN
                payload = buf[pos + header : stop]
                if self._fragments:
                    self._fragments.append(payload)
                    payload = b"".join(self._fragments)
                    self._fragments = []
                self._on_data(payload)
            else:
                self._fragments.append(buf[pos + header : stop])
            pos = stop
        self._buf = buf[pos:] if pos < end else b""
