"""The client's fast frame splitter, fed frames that websockets itself serialized."""

from __future__ import annotations

import pytest
from websockets.frames import Close, Frame, Opcode

from load.frames import FrameError, FrameSplitter


def server_frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=False, extensions=[])


class Recorder:
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.control: list[bytes] = []
        self.splitter = FrameSplitter(self.data.append, self.control.append)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_a_text_frame_of_any_length_class_comes_out_whole(size: int) -> None:
    rec = Recorder()
    payload = bytes(i % 251 for i in range(size))
    rec.splitter.feed(server_frame(Opcode.TEXT, payload))
    assert rec.data == [payload]
    assert rec.splitter.buffered == 0


def test_frames_split_at_every_byte_boundary_come_out_the_same() -> None:
    stream = b"".join(
        server_frame(Opcode.TEXT, p) for p in (b"a", b"b" * 130, b"c" * 70_000, b'{"x":1}')
    )
    for step in (1, 2, 3, 7, 1000):
        rec = Recorder()
        for i in range(0, len(stream), step):
            rec.splitter.feed(stream[i : i + step])
        assert rec.data == [b"a", b"b" * 130, b"c" * 70_000, b'{"x":1}']


def test_control_frames_are_handed_back_whole_and_in_order() -> None:
    ping = server_frame(Opcode.PING, b"hi")
    close = server_frame(Opcode.CLOSE, Close(1000, "bye").serialize())
    rec = Recorder()
    rec.splitter.feed(
        server_frame(Opcode.TEXT, b"one") + ping + server_frame(Opcode.TEXT, b"two") + close
    )
    assert rec.data == [b"one", b"two"]
    assert rec.control == [ping, close]


def test_a_fragmented_message_is_reassembled() -> None:
    rec = Recorder()
    rec.splitter.feed(server_frame(Opcode.TEXT, b"hel", fin=False))
    rec.splitter.feed(server_frame(Opcode.PING, b""))  # control frames may interleave
    rec.splitter.feed(server_frame(Opcode.CONT, b"lo ", fin=False))
    assert rec.data == []
    rec.splitter.feed(server_frame(Opcode.CONT, b"world"))
    assert rec.data == [b"hello world"]
    assert len(rec.control) == 1


def test_a_partial_frame_waits_for_the_rest() -> None:
    frame = server_frame(Opcode.TEXT, b"x" * 300)
    rec = Recorder()
    rec.splitter.feed(frame[:3])
    rec.splitter.feed(frame[3:100])
    assert rec.data == []
    assert rec.splitter.buffered == 100
    rec.splitter.feed(frame[100:])
    assert rec.data == [b"x" * 300]


def test_a_masked_frame_from_the_server_is_an_error() -> None:
    masked = Frame(Opcode.TEXT, b"hi").serialize(mask=True, extensions=[])
    with pytest.raises(FrameError, match="masked"):
        Recorder().splitter.feed(masked)


def test_an_absurd_frame_length_is_an_error() -> None:
    header = bytes([0x81, 127]) + (2**40).to_bytes(8, "big")
    with pytest.raises(FrameError, match="bytes"):
        Recorder().splitter.feed(header)
