"""TftpServer over loopback UDP with a hand-driven client: TIDs, refusals, records, shutdown."""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalflow.boot.tftp.server import READ_ONLY_MESSAGE, TftpServer, TransferRecord
from metalflow.boot.tftp.session import DropReason, ErrorCode, Opcode, Outcome
from metalflow.boot.tftp.tree import VirtualTree
from tests.unit.boot.tftp import (
    ServerThread,
    TftpClientError,
    ack,
    decode_reply,
    download,
    error,
    request,
    wait_until,
)

CONTENT = random.Random(11).randbytes(300_000)


@pytest.fixture
def tree(tmp_path: Path) -> VirtualTree:
    (tmp_path / "boot.bin").write_bytes(CONTENT)
    (tmp_path / "small").write_bytes(b"hello")
    return VirtualTree(directories={"": tmp_path})


@pytest.fixture
def running(tree: VirtualTree) -> Iterator[ServerThread]:
    with ServerThread(tree, timeout=0.2, retries=2) as thread:
        yield thread
    assert thread.loop_errors == []


@pytest.fixture
def client() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        yield sock


def test_downloads_and_records_the_transfer(running: ServerThread) -> None:
    options = {"blksize": "1468", "windowsize": "8", "tsize": "0"}
    assert download(running.port, "/boot.bin", options=options) == CONTENT
    assert download(running.port, "small") == b"hello"
    wait_until(lambda: len(running.records) == 2)
    first = running.records[0]
    assert (first.outcome, first.filename, first.size) == (Outcome.COMPLETE, "/boot.bin", 300_000)
    assert (first.blksize, first.windowsize, first.bytes_acked) == (1468, 8, 300_000)
    assert running.read(lambda: running.server.active_transfers) == 0


def test_write_requests_are_refused(running: ServerThread, client: socket.socket) -> None:
    client.sendto(request("boot.bin", opcode=Opcode.WRQ), ("127.0.0.1", running.port))
    reply = decode_reply(client.recv(1024))
    assert (reply.code, reply.message) == (ErrorCode.ACCESS_VIOLATION, READ_ONLY_MESSAGE)
    wait_until(lambda: len(running.records) == 1)
    assert running.records[0].outcome is Outcome.REFUSED


@pytest.mark.parametrize(
    ("name", "code", "message"),
    [
        ("nothere", ErrorCode.FILE_NOT_FOUND, "file not found"),
        ("../boot.bin", ErrorCode.ACCESS_VIOLATION, "access violation"),
    ],
)
def test_unservable_names_get_an_error(
    running: ServerThread, name: str, code: int, message: str
) -> None:
    with pytest.raises(TftpClientError) as raised:
        download(running.port, name)
    assert (raised.value.code, raised.value.message) == (code, message)


def test_mail_mode_is_refused(running: ServerThread, client: socket.socket) -> None:
    client.sendto(request("small", "mail"), ("127.0.0.1", running.port))
    assert decode_reply(client.recv(1024)).code == ErrorCode.ILLEGAL_OPERATION


def test_another_port_gets_error_5_and_the_transfer_goes_on(
    running: ServerThread, client: socket.socket
) -> None:
    client.sendto(request("boot.bin"), ("127.0.0.1", running.port))
    data, transfer = client.recvfrom(1024)
    assert decode_reply(data).block == 1
    assert transfer[1] != running.port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.settimeout(5)
        stranger.sendto(ack(1), transfer)
        reply = decode_reply(stranger.recv(1024))
    assert reply.code == ErrorCode.UNKNOWN_TRANSFER_ID
    client.sendto(ack(1), transfer)
    assert decode_reply(client.recv(1024)).block == 2
    assert running.read(lambda: running.server.dropped[DropReason.WRONG_TID]) == 1


def test_a_repeated_request_does_not_start_a_second_transfer(
    running: ServerThread, client: socket.socket
) -> None:
    client.sendto(request("small"), ("127.0.0.1", running.port))
    client.sendto(request("small"), ("127.0.0.1", running.port))
    wait_until(
        lambda: running.read(lambda: running.server.dropped[DropReason.DUPLICATE_REQUEST]) == 1
    )
    data, transfer = client.recvfrom(1024)
    client.sendto(ack(decode_reply(data).block), transfer)
    wait_until(lambda: len(running.records) == 1)
    assert running.records[0].outcome is Outcome.COMPLETE


def test_a_silent_client_times_out(running: ServerThread, client: socket.socket) -> None:
    client.sendto(request("small"), ("127.0.0.1", running.port))
    wait_until(lambda: len(running.records) == 1)
    record = running.records[0]
    assert record.outcome is Outcome.TIMEOUT
    assert record.bytes_sent == 3 * len(b"hello")
    assert running.read(lambda: running.server.active_transfers) == 0


def test_error_8_in_answer_to_the_oack_ends_the_transfer(
    running: ServerThread, client: socket.socket
) -> None:
    client.sendto(request("small", options={"blksize": "1024"}), ("127.0.0.1", running.port))
    data, transfer = client.recvfrom(1024)
    assert decode_reply(data).opcode is Opcode.OACK
    client.sendto(error(ErrorCode.OPTION_REFUSED, "no thanks"), transfer)
    wait_until(lambda: len(running.records) == 1)
    assert running.records[0].outcome is Outcome.ERROR
    assert running.records[0].error == "client refused the options: no thanks"


def test_garbage_on_the_listening_port_is_counted(
    running: ServerThread, client: socket.socket
) -> None:
    for datagram in [b"", b"\x00\x09", ack(3), b"\x00\x01nonul"]:
        client.sendto(datagram, ("127.0.0.1", running.port))
    wait_until(lambda: running.read(lambda: sum(running.server.dropped.values())) == 4)
    assert running.read(lambda: dict(running.server.dropped)) == {
        "malformed": 2,
        "unknown_opcode": 1,
        "unexpected_opcode": 1,
    }


def test_close_ends_running_transfers_with_an_error(
    tree: VirtualTree, client: socket.socket
) -> None:
    with ServerThread(tree) as thread:
        client.sendto(request("boot.bin"), ("127.0.0.1", thread.port))
        client.recvfrom(1024)
        thread.run(thread.server.close())
        reply = decode_reply(client.recv(1024))
        assert (reply.code, reply.message) == (0, "server shutting down")
        assert thread.records[0].outcome is Outcome.ERROR
        assert thread.read(lambda: thread.server.active_transfers) == 0


def test_a_failing_callback_is_logged_not_raised(
    tree: VirtualTree, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(record: TransferRecord) -> None:
        raise RuntimeError("boom")

    with ServerThread(tree, on_transfer=explode) as thread:
        with caplog.at_level(logging.ERROR, logger="metalflow.boot.tftp"):
            assert download(thread.port, "small") == b"hello"
            wait_until(lambda: "event=tftp.on_transfer_failed" in caplog.text)
        assert download(thread.port, "small") == b"hello"
        assert thread.loop_errors == []


def test_refusals_are_logged_at_info(
    running: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="metalflow.boot.tftp"),
        pytest.raises(TftpClientError),
    ):
        download(running.port, "../secret")
    assert "event=tftp.refused client=127.0.0.1:" in caplog.text
    assert "file='../secret' code=2" in caplog.text


def test_sockname_before_start_is_an_error(tree: VirtualTree) -> None:
    with pytest.raises(RuntimeError):
        _ = TftpServer(tree).sockname
