"""The bus's RESP2 reader (sans-io): whole replies from any split of the bytes, and a
refusal for what is not Redis or too big."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from locshare.cluster._resp import (
    MAX_BULK_BYTES,
    Address,
    ErrorReply,
    RespError,
    RespReader,
    command,
    parse_url,
)
from locshare.errors import ConfigError

MESSAGES = (
    b"*3\r\n$9\r\nsubscribe\r\n$3\r\nch1\r\n:1\r\n"
    b"*3\r\n$7\r\nmessage\r\n$3\r\nch1\r\n$5\r\nhello\r\n"
    b"*3\r\n$7\r\nmessage\r\n$3\r\nch1\r\n$0\r\n\r\n"
    b"+OK\r\n:42\r\n$-1\r\n*-1\r\n-ERR wrong password\r\n"
    b"*3\r\n$7\r\nmessage\r\n$3\r\nch2\r\n$12\r\nwith\r\nCRLFs!\r\n"
)
EXPECTED = [
    [b"subscribe", b"ch1", 1],
    [b"message", b"ch1", b"hello"],
    [b"message", b"ch1", b""],
    b"OK",
    42,
    None,
    None,
    ErrorReply("ERR wrong password"),
    [b"message", b"ch2", b"with\r\nCRLFs!"],
]


def test_whole_buffer() -> None:
    reader = RespReader()
    reader.feed(MESSAGES)
    assert reader.replies() == EXPECTED
    assert reader.replies() == []


@given(st.lists(st.integers(0, len(MESSAGES)), max_size=12))
def test_any_split_gives_the_same_replies(cuts: list[int]) -> None:
    reader = RespReader()
    got = []
    points = sorted({0, *cuts, len(MESSAGES)})
    for start, end in itertools.pairwise(points):
        reader.feed(MESSAGES[start:end])
        got += reader.replies()
    assert got == EXPECTED


def test_one_byte_at_a_time() -> None:
    reader = RespReader()
    got = []
    for i in range(len(MESSAGES)):
        reader.feed(MESSAGES[i : i + 1])
        got += reader.replies()
    assert got == EXPECTED


@pytest.mark.parametrize(
    "data",
    [
        b"?what\r\n",
        b"$abc\r\n",
        b"$%d\r\n" % (MAX_BULK_BYTES + 1),
        b"*200000\r\n",
        b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        b"+" + b"x" * 2000,  # a header line that never ends
    ],
)
def test_what_is_not_redis_is_refused(data: bytes) -> None:
    reader = RespReader()

    def read() -> None:
        reader.feed(data)
        reader.replies()

    with pytest.raises(RespError):
        read()


def test_command_encoding() -> None:
    assert command(b"SUBSCRIBE", b"a", b"bc") == b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$2\r\nbc\r\n"


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://localhost", Address("redis", "localhost", 6379, "", None, None, 0)),
        (
            "rediss://u:p%40ss@cache.example:6380/3",
            Address("rediss", "cache.example", 6380, "/3", "u", "p@ss", 3),
        ),
        ("redis://:secret@10.0.0.5", Address("redis", "10.0.0.5", 6379, "", None, "secret", 0)),
        (
            "unix:///run/redis.sock?db=2&password=pw",
            Address("unix", "127.0.0.1", 6379, "/run/redis.sock", None, "pw", 2),
        ),
    ],
)
def test_url_forms(url: str, address: Address) -> None:
    assert parse_url(url) == address


@pytest.mark.parametrize("url", ["http://x", "redis://host:notaport", "redis://host/db"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_url(url)
