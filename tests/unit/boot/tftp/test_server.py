"""TftpServer over loopback UDP with a hand-driven client: TIDs, refusals, records, shutdown."""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from metalflow.boot.tftp import server as server_module
from metalflow.boot.tftp.server import READ_ONLY_MESSAGE, TftpServer, TransferRecord
from metalflow.boot.tftp.session import (
    DropReason,
    ErrorCode,
    Opcode,
    Outcome,
    ReadRequest,
    TransferMode,
)
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


def test_a_timeout_over_the_cap_is_left_out_of_the_oack(
    running: ServerThread, client: socket.socket
) -> None:
    options = {"timeout": "255", "blksize": "1024"}
    client.sendto(request("small", options=options), ("127.0.0.1", running.port))
    data, transfer = client.recvfrom(1024)
    assert decode_reply(data).options == {"blksize": "1024"}
    client.sendto(ack(0), transfer)
    data, _ = client.recvfrom(2048)
    client.sendto(ack(decode_reply(data).block), transfer)
    wait_until(lambda: len(running.records) == 1)
    assert running.records[0].outcome is Outcome.COMPLETE


@pytest.fixture
def patient(tree: VirtualTree) -> Iterator[ServerThread]:
    """Transfers that outlive the test unless it ACKs them; close() ends the rest."""
    with ServerThread(tree, timeout=10.0, retries=1) as thread:
        yield thread
    assert thread.loop_errors == []


class Held:
    """A transfer of "small" from `host` that waits for the client's ACK of its only block."""

    def __init__(self, running: ServerThread, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(5)
        self.sock.bind((host, 0))
        self.sock.sendto(request("small"), ("127.0.0.1", running.port))
        data, self.sender = self.sock.recvfrom(1024)
        self.reply = decode_reply(data)

    def finish(self) -> None:
        assert self.reply.block == 1
        self.sock.sendto(ack(1), self.sender)


@pytest.fixture
def hold() -> Iterator[Callable[[ServerThread, str], Held]]:
    held: list[Held] = []

    def start(running: ServerThread, host: str) -> Held:
        held.append(Held(running, host))
        return held[-1]

    yield start
    for transfer in held:
        transfer.sock.close()


def assert_busy(running: ServerThread, transfer: Held) -> None:
    assert transfer.sender == ("127.0.0.1", running.port)
    assert (transfer.reply.code, transfer.reply.message) == (0, "server busy, retry later")


def test_a_client_address_over_its_limit_is_busy_while_others_are_served(
    patient: ServerThread, hold: Callable[[ServerThread, str], Held]
) -> None:
    first = [hold(patient, "127.0.0.1") for _ in range(16)]
    assert all(transfer.reply.block == 1 for transfer in first)
    assert_busy(patient, hold(patient, "127.0.0.1"))
    for host in ("127.0.0.2", "127.0.0.3"):
        other = hold(patient, host)
        assert other.reply.block == 1
        other.finish()
    assert patient.read(lambda: patient.server.dropped[DropReason.BUSY]) == 1
    wait_until(lambda: len(patient.records) == 2)
    assert [record.client[0] for record in patient.records] == ["127.0.0.2", "127.0.0.3"]
    assert patient.read(lambda: patient.server.active_transfers) == 16


def test_the_total_limit_counts_every_client(
    tree: VirtualTree, hold: Callable[[ServerThread, str], Held]
) -> None:
    with ServerThread(tree, timeout=10.0, retries=1, max_transfers=3) as thread:
        held = [hold(thread, f"127.0.0.{index}") for index in (1, 2, 3)]
        assert all(transfer.reply.block == 1 for transfer in held)
        assert_busy(thread, hold(thread, "127.0.0.4"))
        assert_busy(thread, hold(thread, "127.0.0.1"))
        assert thread.read(lambda: thread.server.dropped[DropReason.BUSY]) == 2
        assert thread.records == []


def test_ended_transfers_free_their_slots(
    tree: VirtualTree, hold: Callable[[ServerThread, str], Held]
) -> None:
    with ServerThread(
        tree, timeout=10.0, retries=1, max_transfers=3, max_transfers_per_client=2
    ) as thread:
        a, b = hold(thread, "127.0.0.1"), hold(thread, "127.0.0.1")
        assert_busy(thread, hold(thread, "127.0.0.1"))
        a.finish()
        wait_until(lambda: thread.read(lambda: thread.server.active_transfers) == 1)
        assert hold(thread, "127.0.0.1").reply.block == 1
        c = hold(thread, "127.0.0.2")
        assert_busy(thread, hold(thread, "127.0.0.3"))
        b.sock.sendto(error(ErrorCode.NOT_DEFINED, "cancelled"), b.sender)
        wait_until(lambda: thread.read(lambda: thread.server.active_transfers) == 2)
        assert hold(thread, "127.0.0.3").reply.block == 1
        c.finish()
        wait_until(lambda: thread.read(lambda: thread.server.active_transfers) == 2)
        assert thread.read(lambda: dict(thread.server._per_client)) == {
            "127.0.0.1": 1,
            "127.0.0.3": 1,
        }
        thread.run(thread.server.close())
        assert thread.read(lambda: dict(thread.server._per_client)) == {}


def test_a_timed_out_transfer_frees_its_slot(
    tree: VirtualTree, hold: Callable[[ServerThread, str], Held]
) -> None:
    with ServerThread(tree, timeout=0.1, retries=0, max_transfers_per_client=1) as thread:
        hold(thread, "127.0.0.1")
        wait_until(lambda: len(thread.records) == 1)
        assert thread.records[0].outcome is Outcome.TIMEOUT
        assert download(thread.port, "small") == b"hello"
        assert thread.read(lambda: dict(thread.server._per_client)) == {}


def test_busy_is_logged_once_per_client_address(
    tree: VirtualTree,
    hold: Callable[[ServerThread, str], Held],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        ServerThread(tree, timeout=10.0, retries=1, max_transfers=1) as thread,
        caplog.at_level(logging.INFO, logger="metalflow.boot.tftp"),
    ):
        hold(thread, "127.0.0.1")
        for host in ("127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2", "127.0.0.1"):
            assert_busy(thread, hold(thread, host))
        assert thread.read(lambda: thread.server.dropped[DropReason.BUSY]) == 5
        lines = [record.getMessage() for record in caplog.records if "tftp.busy" in record.msg]
    assert len(lines) == 2
    assert lines[0].startswith("event=tftp.busy client=127.0.0.1:")
    assert lines[1].startswith("event=tftp.busy client=127.0.0.2:")
    assert "file='small' transfers=1 client_transfers=0" in lines[1]


def test_the_busy_log_memory_is_bounded_and_expires(
    tree: VirtualTree, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "_BUSY_LOG_CLIENTS", 2)
    server = TftpServer(tree)
    rrq = ReadRequest(filename="small", mode=TransferMode.OCTET)

    def log_at(host: str, now: float) -> None:
        server._log_busy((host, 1000), rrq, now)

    with caplog.at_level(logging.INFO, logger="metalflow.boot.tftp"):
        log_at("10.0.0.1", 0.0)
        log_at("10.0.0.2", 1.0)
        log_at("10.0.0.3", 2.0)  # full: counted by the caller, not logged
        log_at("10.0.0.1", 9.9)
        assert len(server._busy_logged) == 2
        log_at("10.0.0.3", 10.0)  # 10.0.0.1 has expired and made room
        log_at("10.0.0.1", 10.5)  # still full: 10.0.0.2 expires at 11.0
        log_at("10.0.0.1", 11.0)
    logged = [record.getMessage().split()[1] for record in caplog.records]
    assert logged == [f"client=10.0.0.{host}:1000" for host in (1, 2, 3, 1)]
    assert list(server._busy_logged) == ["10.0.0.3", "10.0.0.1"]


@pytest.mark.parametrize("limits", [{"max_transfers": 0}, {"max_transfers_per_client": 0}])
def test_invalid_transfer_limits_are_refused(tree: VirtualTree, limits: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TftpServer(tree, **limits)
