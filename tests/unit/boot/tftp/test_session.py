"""ReadSession driven by hand with a fake clock, then by simulated clients over a lossy link."""

from __future__ import annotations

import io
import random
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metalflow.boot.tftp.session import (
    BLOCK_NUMBERS,
    DropReason,
    ErrorCode,
    Opcode,
    Outcome,
    ReadRequest,
    ReadSession,
    SessionLimits,
    TransferMode,
    encode_data,
    to_netascii,
)
from tests.unit.boot.tftp import Reply, ack, decode_reply, error, request

LIMITS = SessionLimits()


def session_for(
    data: bytes,
    options: dict[str, str] | None = None,
    *,
    mode: TransferMode = TransferMode.OCTET,
    limits: SessionLimits = LIMITS,
) -> ReadSession:
    read = ReadRequest(filename="f", mode=mode, options=options or {})
    return ReadSession(read, io.BytesIO(data), len(data), limits)


def replies(datagrams: list[bytes]) -> list[Reply]:
    return [decode_reply(datagram) for datagram in datagrams]


def blocks(datagrams: list[bytes]) -> list[int]:
    return [reply.block for reply in replies(datagrams)]


class FailingSource:
    def read(self, size: int, /) -> bytes:
        raise OSError(5, "Input/output error")


def test_without_options_the_first_block_goes_out_at_once() -> None:
    data = bytes(range(256)) * 3
    session = session_for(data)
    [first] = replies(session.start(0.0))
    assert (first.opcode, first.block, first.payload) == (Opcode.DATA, 1, data[:512])
    assert session.next_deadline == 1.0


def test_oack_carries_understood_options_in_the_clients_order() -> None:
    session = session_for(
        b"x" * 5000,
        {"tsize": "0", "x-unknown": "1", "blksize": "1468", "timeout": "3", "windowsize": "4"},
    )
    [oack] = replies(session.start(0.0))
    assert oack.opcode is Opcode.OACK
    assert list(oack.options.items()) == [
        ("tsize", "5000"),
        ("blksize", "1468"),
        ("timeout", "3"),
        ("windowsize", "4"),
    ]
    assert session.next_deadline == 3.0


@pytest.mark.parametrize(
    ("asked", "max_blksize", "acknowledged"),
    [
        ("65464", 1468, "1468"),
        ("9000", 65464, "9000"),
        ("1024", 1468, "1024"),
        ("8", 1468, "8"),
        ("7", 1468, None),
        ("65465", 1468, None),
        ("abc", 1468, None),
        ("", 1468, None),
        ("99999999999999999999", 1468, None),
    ],
)
def test_blksize_is_clamped_or_ignored(
    asked: str, max_blksize: int, acknowledged: str | None
) -> None:
    session = session_for(
        b"x" * 100, {"blksize": asked}, limits=SessionLimits(max_blksize=max_blksize)
    )
    [first] = replies(session.start(0.0))
    if acknowledged is None:
        assert (first.opcode, session.blksize) == (Opcode.DATA, 512)
    else:
        assert first.options == {"blksize": acknowledged}
        assert session.blksize == int(acknowledged)


@pytest.mark.parametrize(
    ("asked", "acknowledged"), [("1000", "64"), ("8", "8"), ("0", None), ("65536", None)]
)
def test_windowsize_is_clamped_or_ignored(asked: str, acknowledged: str | None) -> None:
    session = session_for(b"x" * 100, {"windowsize": asked})
    [first] = replies(session.start(0.0))
    if acknowledged is None:
        assert first.opcode is Opcode.DATA
    else:
        assert first.options == {"windowsize": acknowledged}


def test_tsize_is_not_offered_in_netascii() -> None:
    session = session_for(b"a\n", {"tsize": "0", "blksize": "512"}, mode=TransferMode.NETASCII)
    [oack] = replies(session.start(0.0))
    assert oack.options == {"blksize": "512"}


def test_oack_is_acknowledged_by_ack_zero_only() -> None:
    session = session_for(b"x" * 2000, {"blksize": "512", "windowsize": "2"})
    session.start(0.0)
    assert session.on_datagram(ack(1), 0.1) == []
    assert session.dropped[DropReason.STALE_ACK] == 1
    assert blocks(session.on_datagram(ack(0), 0.2)) == [1, 2]


def test_error_8_in_answer_to_the_oack_ends_quietly() -> None:
    session = session_for(b"x" * 2000, {"blksize": "512"})
    session.start(0.0)
    assert session.on_datagram(error(ErrorCode.OPTION_REFUSED, "no"), 0.1) == []
    assert session.done and session.outcome is Outcome.ERROR
    assert session.error == "client refused the options: no"
    assert session.next_deadline is None
    assert session.on_timeout(5.0) == []


def test_client_error_mid_transfer_ends_it() -> None:
    session = session_for(b"x" * 2000)
    session.start(0.0)
    assert session.on_datagram(error(ErrorCode.DISK_FULL, "full"), 0.1) == []
    assert session.outcome is Outcome.ERROR
    assert session.error == "client sent ERROR 3: full"


def test_an_ack_inside_the_window_slides_it_past_that_block() -> None:
    blksize = 512
    session = session_for(b"y" * (10 * blksize - 1), {"windowsize": "4"})
    session.start(0.0)
    assert blocks(session.on_datagram(ack(0), 0.0)) == [1, 2, 3, 4]
    assert blocks(session.on_datagram(ack(2), 0.1)) == [3, 4, 5, 6]
    assert blocks(session.on_datagram(ack(6), 0.2)) == [7, 8, 9, 10]
    assert session.on_datagram(ack(10), 0.3) == []
    assert session.outcome is Outcome.COMPLETE
    assert session.bytes_acked == 10 * blksize - 1


def test_duplicate_and_old_acks_are_ignored() -> None:
    session = session_for(b"z" * 2000)
    session.start(0.0)
    assert blocks(session.on_datagram(ack(1), 0.1)) == [2]
    assert session.on_datagram(ack(1), 0.2) == []
    assert session.on_datagram(ack(0), 0.2) == []
    assert session.on_datagram(ack(9), 0.2) == []
    assert session.dropped[DropReason.STALE_ACK] == 3
    assert blocks(session.on_datagram(ack(2), 0.3)) == [3]


def test_timeout_resends_the_unacknowledged_window_unchanged() -> None:
    session = session_for(bytes(range(256)) * 20, {"windowsize": "3"})
    session.start(0.0)
    window = session.on_datagram(ack(0), 0.0)
    assert session.on_timeout(0.5) == []
    assert session.on_timeout(1.0) == window
    assert session.next_deadline == 2.0
    assert session.bytes_sent == 2 * 3 * 512


def test_timeout_option_sets_the_retransmission_interval() -> None:
    session = session_for(b"a" * 600, {"timeout": "5"})
    oack = session.start(0.0)
    assert session.on_timeout(4.9) == []
    assert session.on_timeout(5.0) == oack


@pytest.mark.parametrize(
    ("asked", "max_timeout", "acknowledged"),
    [("5", 5, "5"), ("6", 5, None), ("255", 5, None), ("255", 255, "255"), ("1", 1, "1")],
)
def test_a_timeout_over_max_timeout_is_not_acknowledged(
    asked: str, max_timeout: int, acknowledged: str | None
) -> None:
    """RFC 2349: an acknowledged timeout must be the client's; so a longer one is left out."""
    limits = SessionLimits(timeout=2.0, max_timeout=max_timeout)
    session = session_for(b"x" * 100, {"timeout": asked, "blksize": "1024"}, limits=limits)
    [oack] = replies(session.start(0.0))
    if acknowledged is None:
        assert oack.options == {"blksize": "1024"}
        assert session.next_deadline == 2.0
    else:
        assert oack.options == {"timeout": acknowledged, "blksize": "1024"}
        assert session.next_deadline == int(acknowledged)


def test_retries_exhausted_gives_up_without_sending() -> None:
    session = session_for(b"a" * 600, limits=SessionLimits(retries=2))
    first = session.start(0.0)
    assert session.on_timeout(1.0) == first
    assert session.on_timeout(2.0) == first
    assert session.on_timeout(3.0) == []
    assert session.outcome is Outcome.TIMEOUT
    assert session.next_deadline is None
    assert session.on_timeout(9.0) == []
    assert session.on_datagram(ack(1), 9.0) == []


def test_progress_resets_the_retries() -> None:
    session = session_for(b"a" * 1600, limits=SessionLimits(retries=1))
    session.start(0.0)
    session.on_timeout(1.0)
    assert blocks(session.on_datagram(ack(1), 1.5)) == [2]
    assert blocks(session.on_timeout(2.5)) == [2]
    assert session.on_timeout(3.5) == []
    assert session.outcome is Outcome.TIMEOUT


@pytest.mark.parametrize("size", [0, 512, 1024])
def test_a_size_that_is_a_multiple_of_blksize_ends_with_an_empty_block(size: int) -> None:
    session = session_for(b"m" * size)
    sent = replies(session.start(0.0))
    for block in range(1, size // 512 + 1):
        sent += replies(session.on_datagram(ack(block), 0.0))
    assert [len(reply.payload) for reply in sent] == [512] * (size // 512) + [0]
    assert session.on_datagram(ack(size // 512 + 1), 0.0) == []
    assert session.outcome is Outcome.COMPLETE


def test_block_numbers_wrap_to_zero_past_65535() -> None:
    blksize, count = 8, 70_000
    data = random.Random(7).randbytes(blksize * count)
    session = session_for(data, {"blksize": str(blksize), "windowsize": "16"})
    session.start(0.0)
    received = bytearray()
    wire_blocks: list[int] = []
    answer = ack(0)
    while not session.done:
        window = replies(session.on_datagram(answer, 0.0))
        wire_blocks += [reply.block for reply in window]
        received += b"".join(reply.payload for reply in window)
        if window:
            answer = ack(window[-1].block)
    assert session.outcome is Outcome.COMPLETE
    assert bytes(received) == data
    assert len(wire_blocks) == count + 1
    assert wire_blocks[65534:65538] == [65535, 0, 1, 2]
    assert wire_blocks == [n % BLOCK_NUMBERS for n in range(1, count + 2)]


def test_netascii_converts_line_ends() -> None:
    text = b"line one\nbare\rcr\r\nend"
    session = session_for(text, mode=TransferMode.NETASCII)
    [block] = replies(session.start(0.0))
    assert block.payload == b"line one\r\nbare\r\0cr\r\0\r\nend"
    assert to_netascii(text) == block.payload


def test_netascii_across_block_boundaries() -> None:
    text = b"\n\r" * 700
    session = session_for(text, mode=TransferMode.NETASCII)
    received = b"".join(reply.payload for reply in replies(session.start(0.0)))
    block = 1
    while not session.done:
        window = replies(session.on_datagram(ack(block), 0.0))
        received += b"".join(reply.payload for reply in window)
        block += 1
    assert received == to_netascii(text)


def test_malformed_and_unexpected_datagrams_are_counted_and_dropped() -> None:
    session = session_for(b"q" * 1000)
    session.start(0.0)
    for datagram in [b"", b"\x00", b"\x00\x04\x00", b"\x00\x04\x00\x01\x00", b"\x00\x05\x00"]:
        assert session.on_datagram(datagram, 0.1) == []
    assert session.on_datagram(b"\x00\x09", 0.1) == []
    assert session.on_datagram(request("f"), 0.1) == []
    assert session.on_datagram(encode_data(1, b"up"), 0.1) == []
    assert session.dropped == {
        DropReason.MALFORMED: 5,
        DropReason.UNKNOWN_OPCODE: 1,
        DropReason.UNEXPECTED_OPCODE: 2,
    }
    assert not session.done


def test_a_read_error_is_reported_to_the_client() -> None:
    read = ReadRequest(filename="f", mode=TransferMode.OCTET)
    session = ReadSession(read, FailingSource(), 100, LIMITS)
    [reply] = replies(session.start(0.0))
    assert (reply.opcode, reply.code) == (Opcode.ERROR, ErrorCode.NOT_DEFINED)
    assert session.outcome is Outcome.ERROR


def test_abort_sends_one_error_then_nothing() -> None:
    session = session_for(b"q" * 1000)
    session.start(0.0)
    [reply] = replies(session.abort("server shutting down"))
    assert (reply.code, reply.message) == (0, "server shutting down")
    assert session.abort("again") == []
    assert session.outcome is Outcome.ERROR


def test_start_twice_and_mail_mode_are_caller_bugs() -> None:
    session = session_for(b"")
    session.start(0.0)
    with pytest.raises(RuntimeError):
        session.start(0.0)
    with pytest.raises(ValueError, match="mail"):
        session_for(b"", mode=TransferMode.MAIL)


@pytest.mark.parametrize(
    "limits",
    [
        {"max_blksize": 7},
        {"max_blksize": 65465},
        {"max_windowsize": 0},
        {"timeout": 0.0},
        {"max_timeout": 0},
        {"max_timeout": 256},
        {"retries": -1},
    ],
)
def test_invalid_limits_are_refused(limits: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SessionLimits(**limits)


datagrams = st.one_of(
    st.binary(max_size=40),
    st.integers(0, 70).map(ack),
    st.integers(65530, 65535).map(ack),
    st.tuples(st.integers(0, 9), st.text(max_size=5)).map(lambda pair: error(*pair)),
    st.just(b"\x00\x04"),
)


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(0, 3000),
    options=st.dictionaries(
        st.sampled_from(["blksize", "windowsize", "tsize", "timeout", "x"]),
        st.sampled_from(["0", "1", "8", "512", "4", "65535", "abc", ""]),
    ),
    events=st.lists(st.one_of(datagrams, st.floats(0, 3)), max_size=60),
)
def test_arbitrary_datagrams_never_raise_and_replies_are_well_formed(
    size: int, options: dict[str, str], events: list[bytes | float]
) -> None:
    session = session_for(bytes(size), options)
    now = 0.0
    sent = session.start(now)
    for event in events:
        if isinstance(event, float):
            now += event
            sent += session.on_timeout(now)
        else:
            sent += session.on_datagram(event, now)
    for datagram in sent:
        reply = decode_reply(datagram, max_payload=session.blksize)
        assert reply.opcode in (Opcode.DATA, Opcode.OACK, Opcode.ERROR)


def simulate(
    data: bytes,
    *,
    blksize: int,
    windowsize: int,
    loss: float = 0.0,
    duplicate: float = 0.0,
    seed: int = 0,
) -> tuple[ReadSession, bytes]:
    """A client and the session over a link that drops, repeats and reorders datagrams.

    The client is RFC 7440's receiver: it acknowledges each full window and the last block, and
    answers a block out of order with an ACK for the last block it has in order.
    """
    rng = random.Random(seed)
    limits = SessionLimits(max_blksize=65464, max_windowsize=65535, retries=60)
    options = {"blksize": str(blksize), "windowsize": str(windowsize)}
    session = session_for(data, options, limits=limits)
    now = 0.0
    to_client: deque[bytes] = deque(session.start(now))
    to_server: deque[bytes] = deque()
    received = bytearray()
    expected, since_ack = 1, 0
    for _ in range(2_000_000):
        if session.done:
            break
        queues = [queue for queue in (to_client, to_server) if queue]
        if not queues:
            now = session.next_deadline or now
            to_client.extend(session.on_timeout(now))
            continue
        queue = rng.choice(queues)
        datagram = queue.popleft()
        if rng.random() < loss:
            continue
        if rng.random() < duplicate:
            queue.append(datagram)
        if queue is to_server:
            to_client.extend(session.on_datagram(datagram, now))
            continue
        reply = decode_reply(datagram)
        if reply.opcode is Opcode.OACK:
            if expected == 1:
                to_server.append(ack(0))
        elif reply.block == expected % BLOCK_NUMBERS:
            received += reply.payload
            expected += 1
            since_ack += 1
            if len(reply.payload) < blksize or since_ack == windowsize:
                to_server.append(ack(reply.block))
                since_ack = 0
        else:
            to_server.append(ack(expected - 1))
            since_ack = 0
    return session, bytes(received)


@settings(max_examples=100, deadline=None)
@given(
    data=st.binary(max_size=20_000),
    blksize=st.integers(8, 1500),
    windowsize=st.integers(1, 20),
)
def test_a_lossless_client_reassembles_the_file(data: bytes, blksize: int, windowsize: int) -> None:
    session, received = simulate(data, blksize=blksize, windowsize=windowsize)
    assert session.outcome is Outcome.COMPLETE
    assert received == data
    assert session.bytes_acked == len(data)


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(0, 12_000),
    blksize=st.integers(8, 1024),
    windowsize=st.integers(1, 16),
    loss=st.floats(0.0, 0.3),
    duplicate=st.floats(0.0, 0.2),
    seed=st.integers(0, 2**32),
)
def test_a_lossy_client_still_reassembles_the_file(
    size: int, blksize: int, windowsize: int, loss: float, duplicate: float, seed: int
) -> None:
    data = random.Random(seed).randbytes(size)
    session, received = simulate(
        data, blksize=blksize, windowsize=windowsize, loss=loss, duplicate=duplicate, seed=seed
    )
    assert session.outcome is Outcome.COMPLETE
    assert received == data


def test_a_lossy_link_costs_retransmissions_not_correctness() -> None:
    data = random.Random(3).randbytes(200_000)
    session, received = simulate(data, blksize=512, windowsize=8, loss=0.25, duplicate=0.15, seed=3)
    assert received == data
    assert session.bytes_sent > len(data)
    assert session.dropped[DropReason.STALE_ACK] > 0


def test_tsize_is_not_offered_for_an_empty_file() -> None:
    session = session_for(b"", {"tsize": "0"})
    [first] = replies(session.start(0.0))
    assert (first.opcode, first.payload) == (Opcode.DATA, b"")
