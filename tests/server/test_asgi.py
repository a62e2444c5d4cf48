"""A request body is read whole within the limit, and no further than the limit past it (a client
sending gigabytes is not buffered)."""

from __future__ import annotations

import asyncio

from raymaker.server.asgi import read_body


def _receiver(chunks: list[bytes]):
    sent = []

    async def receive() -> dict:
        i = len(sent)
        sent.append(i)
        return {"type": "http.request", "body": chunks[i], "more_body": i < len(chunks) - 1}

    return receive, sent


def test_a_body_within_the_limit_is_read_whole() -> None:
    receive, sent = _receiver([b"ab", b"cd", b"e"])
    assert asyncio.run(read_body(receive, 5)) == b"abcde" and len(sent) == 3


def test_a_body_past_the_limit_stops_being_read() -> None:
    receive, sent = _receiver([b"abc", b"def", b"ghi", b"jkl"])
    assert asyncio.run(read_body(receive, 5)) is None
    assert len(sent) == 2  # the chunk that passed the limit was the last one read


def test_a_client_gone_midway_ends_the_body() -> None:
    messages = iter([{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}])

    async def receive() -> dict:
        return next(messages)

    assert asyncio.run(read_body(receive, 10)) == b"ab"
