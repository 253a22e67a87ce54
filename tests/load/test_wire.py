"""HTTP/1.1 bytes for POST /api/publish."""

from __future__ import annotations

import pytest

from load.wire import count_replies, parse_response_head, publish_request, resp_command


def test_publish_request_is_a_complete_http_request() -> None:
    raw = publish_request("127.0.0.1", 8000, b'{"channel":"c","data":1}')
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /api/publish HTTP/1.1"
    assert "Host: 127.0.0.1:8000" in lines
    assert "Content-Type: application/json" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert body == b'{"channel":"c","data":1}'


def test_response_head_gives_status_length_and_keep_alive() -> None:
    head = parse_response_head(
        b"HTTP/1.1 200 OK\r\ncontent-length: 31\r\ncontent-type: application/json\r\n\r\n"
    )
    assert (head.status, head.content_length, head.keep_alive) == (200, 31, True)


def test_connection_close_ends_keep_alive() -> None:
    head = parse_response_head(
        b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    assert (head.status, head.keep_alive) == (503, False)


def test_http_1_0_is_not_kept_alive() -> None:
    assert not parse_response_head(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n").keep_alive


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"SPDY/3 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 abc OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nno-colon\r\n\r\n", "malformed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\n\r\n", "no Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "chunked"),
    ],
)
def test_malformed_response_heads_are_refused(raw: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_response_head(raw)


def test_resp_command_frames_each_argument_with_its_length() -> None:
    raw = resp_command(b"PUBLISH", b"news", b'{"a":"\r\n"}')
    assert raw == b'*3\r\n$7\r\nPUBLISH\r\n$4\r\nnews\r\n$10\r\n{"a":"\r\n"}\r\n'


def test_replies_are_counted_by_line() -> None:
    assert count_replies(b":1\r\n:0\r\n:12\r\n") == (3, None)
    assert count_replies(b"") == (0, None)


def test_the_first_error_reply_is_returned() -> None:
    count, error = count_replies(b":1\r\n-ERR wrong\r\n-ERR later\r\n")
    assert (count, error) == (3, b"-ERR wrong")
