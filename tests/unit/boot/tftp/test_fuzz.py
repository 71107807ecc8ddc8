"""Fuzzing: over 100,000 random and mutated packets through the parser, sessions and the server.

Most go straight into parse_request and ReadSession.on_datagram (fast); tens of thousands go over
real UDP to a real TftpServer on 127.0.0.1, in bursts, without waiting for replies. Afterwards
the server must still serve a correct file, and no exception may have reached its event loop.
"""

from __future__ import annotations

import io
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalflow.boot.tftp.session import (
    ErrorCode,
    MalformedPacket,
    Opcode,
    ReadRequest,
    ReadSession,
    SessionLimits,
    TransferMode,
    encode_data,
    parse_request,
)
from metalflow.boot.tftp.tree import VirtualTree
from tests.unit.boot.tftp import ServerThread, ack, decode_reply, download, error, request

CONTENT = random.Random(5).randbytes(100_000)
REQUESTS = [
    request("boot.bin"),
    request("/boot.bin", "netascii"),
    request("boot.bin", options={"blksize": "1468", "windowsize": "8", "tsize": "0"}),
    request("small", "OCTET", {"timeout": "1", "blksize": "8"}),
    request("../etc/passwd"),
    request("nothere", options={"x-unknown": "1"}),
    request("boot.bin", opcode=Opcode.WRQ),
]
TRANSFER_PACKETS = [
    ack(0),
    ack(1),
    ack(65535),
    error(ErrorCode.OPTION_REFUSED, "no"),
    error(ErrorCode.NOT_DEFINED, ""),
    encode_data(1, b"x" * 16),
    request("boot.bin"),
]
ACKS = [ack(0), ack(1), ack(2), ack(65535), ack(4)]
"""For the transfer's own client: mutations of these rarely end the transfer, so they reach it."""
BURST = 200


def mutate(rng: random.Random, packet: bytes) -> bytes:
    """Bit flips, truncations, insertions, deletions, a duplicated slice or plain noise."""
    data = bytearray(packet)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(6)
        position = rng.randint(0, len(data))
        if kind == 0 and data:
            index = rng.randrange(len(data))
            data[index] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del data[position:]
        elif kind == 2:
            data[position:position] = rng.randbytes(rng.randint(1, 8))
        elif kind == 3:
            del data[position : position + rng.randint(1, 8)]
        elif kind == 4:
            data[position:position] = data[position : position + rng.randint(1, 16)]
        else:
            return rng.randbytes(rng.randint(0, 64))
    return bytes(data)


def fuzzed(rng: random.Random, seeds: list[bytes], count: int) -> Iterator[bytes]:
    for _ in range(count):
        if rng.random() < 0.1:
            yield rng.randbytes(rng.randint(0, 600))
        else:
            yield mutate(rng, rng.choice(seeds))


def new_session(rng: random.Random) -> ReadSession:
    options = rng.choice([{}, {"blksize": "8", "windowsize": "4"}, {"tsize": "0"}])
    mode = rng.choice([TransferMode.OCTET, TransferMode.NETASCII])
    read = ReadRequest(filename="f", mode=mode, options=options)
    session = ReadSession(read, io.BytesIO(CONTENT), len(CONTENT), SessionLimits())
    session.start(0.0)
    return session


def test_parser_and_sessions_take_80000_mutated_packets() -> None:
    rng = random.Random(2024)
    parsed = 0
    for datagram in fuzzed(rng, REQUESTS, 40_000):
        try:
            parse_request(datagram)
            parsed += 1
        except MalformedPacket:
            pass
    assert parsed > 0
    session, now, sessions = new_session(rng), 0.0, 1
    for datagram in fuzzed(rng, TRANSFER_PACKETS, 40_000):
        if rng.random() < 0.05:
            now += rng.random() * 2
            replies = session.on_timeout(now)
        else:
            replies = session.on_datagram(datagram, now)
        for reply in replies:
            decode_reply(reply, max_payload=session.blksize)
        if session.done:
            session, now, sessions = new_session(rng), 0.0, sessions + 1
    assert sessions > 1


@pytest.fixture
def running(tmp_path: Path) -> Iterator[ServerThread]:
    (tmp_path / "boot.bin").write_bytes(CONTENT)
    (tmp_path / "small").write_bytes(b"hello")
    with ServerThread(VirtualTree(directories={"": tmp_path}), timeout=0.1, retries=1) as thread:
        yield thread


def send_in_bursts(sock: socket.socket, datagrams: Iterator[bytes], to: tuple[str, int]) -> int:
    sent = 0
    for datagram in datagrams:
        try:
            sock.sendto(datagram, to)
            sent += 1
        except OSError:
            pass
        if sent % BURST == 0:
            time.sleep(0.003)
    return sent


def test_server_takes_mutated_packets_over_udp_and_still_serves(running: ServerThread) -> None:
    rng = random.Random(99)
    listener = ("127.0.0.1", running.port)
    sent = 0
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger,
    ):
        attacker.settimeout(5)
        sent += send_in_bursts(attacker, fuzzed(rng, REQUESTS, 20_000), listener)
        while sent < 40_000:
            wait_for_quiet(running)
            drain(attacker)
            attacker.sendto(request("boot.bin", options={"windowsize": "4"}), listener)
            _, transfer = attacker.recvfrom(65536)
            while sent < 40_000 and running.read(lambda: running.server.active_transfers):
                sent += send_in_bursts(attacker, fuzzed(rng, ACKS, BURST), transfer)
                sent += send_in_bursts(
                    stranger, fuzzed(rng, TRANSFER_PACKETS, BURST // 2), transfer
                )
    wait_for_quiet(running)
    assert download(running.port, "boot.bin", options={"blksize": "1468"}) == CONTENT
    assert download(running.port, "small") == b"hello"
    dropped = running.read(lambda: dict(running.server.dropped))
    assert sum(dropped.values()) > 20_000
    assert dropped["wrong_tid"] > 0
    assert running.loop_errors == []


def wait_for_quiet(running: ServerThread) -> None:
    """Until every transfer the fuzzing started has ended (timeout 0.1 s, one retry)."""
    deadline = time.monotonic() + 10
    while running.read(lambda: running.server.active_transfers) and time.monotonic() < deadline:
        time.sleep(0.02)


def drain(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        while True:
            sock.recv(65536)
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5)
