"""The QEMU driver's pure parts (QMP framing, power plans, boot order) and its QMP client and
driver against scripted stand-ins for QEMU on real sockets."""

from __future__ import annotations

import json
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow.power.driver import (
    TARGET_STATE,
    Bmc,
    BootDevice,
    BootRequest,
    PowerAction,
    PowerError,
    PowerState,
    Unsupported,
    driver_class,
)
from metalflow.power.qemu import (
    NEEDS_RESET,
    BootCandidate,
    BootKind,
    QemuDriver,
    QmpClient,
    QmpClosed,
    QmpError,
    QmpFramer,
    QmpProtocolError,
    boot_order,
    encode_command,
    media_filename,
    power_plan,
    power_state_of,
    qdev_path,
)

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}

RUN_STATES = (
    "debug",
    "inmigrate",
    "internal-error",
    "io-error",
    "paused",
    "postmigrate",
    "prelaunch",
    "finish-migrate",
    "restore-vm",
    "running",
    "save-vm",
    "shutdown",
    "suspended",
    "watchdog",
    "guest-panicked",
    "colo",
)
"""QAPI's RunState, QEMU 7.2."""

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(), json_values, max_size=5)


def line(message: object) -> bytes:
    return json.dumps(message).encode() + b"\r\n"


@given(st.lists(json_objects, max_size=6), st.data())
def test_framer_yields_every_message_however_the_stream_is_cut(
    messages: list[dict[str, Any]], data: st.DataObject
) -> None:
    stream = b"".join(line(message) for message in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    framer = QmpFramer()
    received = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        received += framer.feed(stream[start:end])
    assert received == messages


@pytest.mark.parametrize("garbage", [b"[1, 2]\n", b"not json\n", b"\xff\xfe\n", b'"text"\n'])
def test_framer_rejects_what_is_not_a_json_object(garbage: bytes) -> None:
    with pytest.raises(QmpProtocolError):
        QmpFramer().feed(garbage)


def test_framer_rejects_an_endless_line() -> None:
    with pytest.raises(QmpProtocolError, match="longer than"):
        QmpFramer().feed(b"{" + b" " * (1 << 20))


def test_commands_are_one_json_line_with_an_id() -> None:
    encoded = encode_command("qom-get", {"path": "/machine", "property": "type"}, "metalflow-3")
    assert encoded.endswith(b"\n") and encoded.count(b"\n") == 1
    assert json.loads(encoded) == {
        "execute": "qom-get",
        "id": "metalflow-3",
        "arguments": {"path": "/machine", "property": "type"},
    }
    assert "arguments" not in json.loads(encode_command("cont", None, "x"))


class Peer:
    """The QEMU end of a socketpair: records what it is sent, answers with `reply` (None hangs
    up)."""

    def __init__(
        self,
        reply: Callable[[dict[str, Any]], list[bytes] | None],
        greeting: bytes = line(GREETING),
    ) -> None:
        self.client_end, self._end = socket.socketpair()
        self.received: list[dict[str, Any]] = []
        self._reply = reply
        self._greeting = greeting
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with self._end, self._end.makefile("rb") as stream:
            self._end.sendall(self._greeting)
            for raw in stream:
                message = json.loads(raw)
                self.received.append(message)
                chunks = self._reply(message)
                if chunks is None:
                    return
                for chunk in chunks:
                    self._end.sendall(chunk)

    def client(self, timeout: float = 5) -> QmpClient:
        return QmpClient(self.client_end, timeout)

    def join(self) -> None:
        self._thread.join(timeout=5)


def answer(message: dict[str, Any], value: object = None) -> bytes:
    return line({"return": {} if value is None else value, "id": message["id"]})


def test_handshake_leaves_negotiation_mode_before_any_command() -> None:
    peer = Peer(lambda message: [answer(message)])
    with peer.client() as client:
        greeting = client.handshake()
        client.execute("cont")
    peer.join()
    assert greeting["QMP"]["version"]["qemu"]["major"] == 7
    assert [message["execute"] for message in peer.received] == ["qmp_capabilities", "cont"]


def test_events_queued_ahead_of_the_greeting_are_skipped() -> None:
    stale = line({"event": "STOP", "timestamp": {}}) + line(
        {"event": "SHUTDOWN", "data": {"guest": True}, "timestamp": {}}
    )
    peer = Peer(lambda message: [answer(message)], greeting=stale + line(GREETING))
    with peer.client() as client:
        greeting = client.handshake()
        assert client.events == []
        client.execute("cont")
    peer.join()
    assert greeting["QMP"]["version"]["qemu"]["major"] == 7
    assert [message["execute"] for message in peer.received] == ["qmp_capabilities", "cont"]


def test_events_before_the_capabilities_answer_are_not_an_answer() -> None:
    def reply(message: dict[str, Any]) -> list[bytes]:
        if message["execute"] == "qmp_capabilities":
            return [line({"event": "RESUME", "timestamp": {}}), answer(message)]
        return [answer(message, {"status": "running"})]

    peer = Peer(reply)
    with peer.client() as client:
        client.handshake()
        assert client.execute("query-status") == {"status": "running"}
        assert [event["event"] for event in client.events] == ["RESUME"]


def test_only_events_may_come_ahead_of_the_greeting() -> None:
    early = line({"return": {}, "id": "metalflow-1"}) + line(GREETING)
    peer = Peer(lambda message: [answer(message)], greeting=early)
    with peer.client() as client, pytest.raises(QmpProtocolError, match="no QMP greeting"):
        client.handshake()


def test_events_before_the_answer_are_kept_for_wait_event() -> None:
    def reply(message: dict[str, Any]) -> list[bytes]:
        if message["execute"] == "system_reset":
            event = {"event": "RESET", "data": {"guest": False}, "timestamp": {}}
            stop = {"event": "STOP", "timestamp": {}}
            # QEMU writes the event and the answer as they come: here one byte at a time.
            stream = line(stop) + line(event) + answer(message)
            return [stream[i : i + 1] for i in range(len(stream))]
        return [answer(message, {"status": "running"})]

    peer = Peer(reply)
    with peer.client() as client:
        client.handshake()
        assert client.execute("system_reset") == {}
        assert client.wait_event("RESET")["data"] == {"guest": False}
        assert [event["event"] for event in client.events] == ["STOP"]
        assert client.execute("query-status") == {"status": "running"}


def test_wait_event_reads_on_until_the_event_comes() -> None:
    def reply(message: dict[str, Any]) -> list[bytes]:
        later = line({"event": "SHUTDOWN", "data": {"guest": True}})
        return (
            [answer(message), later]
            if message["execute"] == "system_powerdown"
            else [answer(message)]
        )

    peer = Peer(reply)
    with peer.client() as client:
        client.handshake()
        client.execute("system_powerdown")
        assert client.wait_event("SHUTDOWN")["data"] == {"guest": True}


def test_a_refusal_carries_qemus_class_and_words() -> None:
    def reply(message: dict[str, Any]) -> list[bytes]:
        if message["execute"] == "cont":
            error = {"class": "GenericError", "desc": "Resetting the Virtual Machine is required"}
            return [line({"error": error, "id": message["id"]})]
        return [answer(message)]

    peer = Peer(reply)
    with peer.client() as client:
        client.handshake()
        with pytest.raises(QmpError) as raised:
            client.execute("cont")
    assert raised.value.error_class == "GenericError"
    assert str(raised.value) == "cont: Resetting the Virtual Machine is required"


def test_no_greeting_means_not_qmp() -> None:
    peer = Peer(lambda message: [answer(message)], greeting=line({"hello": "world"}))
    with peer.client() as client, pytest.raises(QmpProtocolError, match="no QMP greeting"):
        client.handshake()


def test_an_answer_to_another_command_is_a_protocol_error() -> None:
    peer = Peer(lambda message: [line({"return": {}, "id": "someone-else"})])
    with peer.client() as client, pytest.raises(QmpProtocolError, match="another command"):
        client.handshake()


def test_a_monitor_closed_mid_command_is_a_connection_error() -> None:
    def reply(message: dict[str, Any]) -> list[bytes] | None:
        return None if message["execute"] == "quit" else [answer(message)]

    peer = Peer(reply)
    with peer.client() as client:
        client.handshake()
        with pytest.raises(QmpClosed):
            client.execute("quit")


def test_a_silent_monitor_times_out() -> None:
    peer = Peer(lambda message: [], greeting=b"")
    with peer.client(timeout=0.2) as client, pytest.raises(TimeoutError):
        client.handshake()


def qemu_after(status: str, command: str) -> str:
    """A VM's run state after `command` as QEMU 7.2 behaves (seen over QMP; the integration
    tests check the states a tiny VM reaches); AssertionError where QEMU refuses."""
    if command == "stop":
        return "paused" if status == "running" else status
    if command == "system_reset":
        return "running" if status == "running" else "prelaunch"
    if command == "cont":
        assert status not in NEEDS_RESET, "Resetting the Virtual Machine is required"
        assert status != "suspended", "a sleeping guest wakes with system_wakeup"
        return "running"
    if command == "system_wakeup":
        assert status == "suspended", "Unable to wake up: guest is not in suspended state"
        return "running"
    assert command == "system_powerdown"
    return status


@given(st.sampled_from(RUN_STATES), st.sampled_from([a for a in PowerAction if a != "soft-off"]))
def test_every_plan_reaches_its_target_from_every_run_state(
    status: str, action: PowerAction
) -> None:
    for command in power_plan(status, action):
        status = qemu_after(status, command)
    assert power_state_of(status) is TARGET_STATE[action]


@pytest.mark.parametrize(
    ("status", "action", "plan"),
    [
        ("prelaunch", PowerAction.ON, ("cont",)),
        ("shutdown", PowerAction.ON, ("system_reset", "cont")),
        ("running", PowerAction.ON, ()),
        ("running", PowerAction.OFF, ("stop", "system_reset")),
        ("paused", PowerAction.OFF, ("stop", "system_reset")),
        ("prelaunch", PowerAction.OFF, ()),
        ("running", PowerAction.SOFT_OFF, ("system_powerdown",)),
        ("prelaunch", PowerAction.SOFT_OFF, ()),
        ("running", PowerAction.CYCLE, ("stop", "system_reset", "cont")),
        ("prelaunch", PowerAction.CYCLE, ("cont",)),
        ("running", PowerAction.RESET, ("system_reset", "cont")),
    ],
)
def test_plans(status: str, action: PowerAction, plan: tuple[str, ...]) -> None:
    assert power_plan(status, action) == plan


@pytest.mark.parametrize("status", RUN_STATES)
def test_only_running_and_sleeping_guests_are_on(status: str) -> None:
    expected = PowerState.ON if status in ("running", "suspended") else PowerState.OFF
    assert power_state_of(status) is expected


candidates = st.lists(
    st.builds(
        BootCandidate,
        path=st.text(alphabet="abcdef", min_size=1, max_size=4),
        kind=st.sampled_from(BootKind),
        bootindex=st.integers(-1, 5),
    ),
    unique_by=lambda device: device.path,
    max_size=6,
)


@given(candidates, st.sampled_from(BootKind))
def test_boot_order_puts_the_chosen_kind_first_and_keeps_the_rest(
    devices: list[BootCandidate], first: BootKind
) -> None:
    order = boot_order(devices, first)
    assert set(order) == {device.path for device in devices}
    placed = sorted((index, path) for path, index in order.items() if index >= 0)
    assert [index for index, _ in placed] == list(range(1, len(placed) + 1))
    kinds = {device.path: device.kind for device in devices}
    chosen = [path for _, path in placed if kinds[path] is first]
    assert [path for _, path in placed[: len(chosen)]] == chosen
    for device in devices:
        if device.kind is first:
            assert order[device.path] >= 1
        else:
            assert (order[device.path] >= 1) == (device.bootindex >= 0)
    before = [
        d.path for d in sorted(devices, key=lambda d: (d.bootindex, d.path)) if d.bootindex >= 0
    ]
    after = [path for _, path in placed if kinds[path] is not first]
    assert after == [path for path in before if kinds[path] is not first]
    again = [BootCandidate(d.path, d.kind, order[d.path]) for d in devices]
    assert boot_order(again, first) == order


def test_boot_order_example() -> None:
    devices = [
        BootCandidate("/machine/peripheral/nic0", BootKind.NIC, 2),
        BootCandidate("/machine/peripheral/disk0", BootKind.DISK, 1),
        BootCandidate("/machine/peripheral/cd0", BootKind.CDROM, -1),
    ]
    assert boot_order(devices, BootKind.NIC) == {
        "/machine/peripheral/nic0": 1,
        "/machine/peripheral/disk0": 2,
        "/machine/peripheral/cd0": -1,
    }
    assert boot_order(devices, BootKind.CDROM)["/machine/peripheral/cd0"] == 1


@pytest.mark.parametrize(
    ("qdev", "path"),
    [
        ("cdrom0", "/machine/peripheral/cdrom0"),
        ("/machine/peripheral-anon/device[2]", "/machine/peripheral-anon/device[2]"),
        ("/machine/peripheral/disk0/virtio-backend", "/machine/peripheral/disk0"),
    ],
)
def test_qdev_path(qdev: str, path: str) -> None:
    assert qdev_path(qdev) == path


def test_media_filenames() -> None:
    assert media_filename("file:///srv/images/hook%20x.iso") == "/srv/images/hook x.iso"
    assert media_filename("/srv/images/hook.iso") == "/srv/images/hook.iso"
    assert media_filename("https://192.0.2.1/hook.iso") == "https://192.0.2.1/hook.iso"
    with pytest.raises(ValueError, match="absolute path"):
        media_filename("images/hook.iso")
    with pytest.raises(ValueError, match="absolute path"):
        media_filename("nfs://192.0.2.1/hook.iso")


def bmc(host: str, **options: str) -> Bmc:
    return Bmc(driver="qemu", host=host, options=options)


def test_the_entry_point_is_this_driver() -> None:
    assert driver_class("qemu") is QemuDriver


@pytest.mark.parametrize(
    ("given_bmc", "message"),
    [
        (bmc("vm1.sock"), "host: 'vm1.sock' is not an absolute path"),
        (bmc("vm1", qmp="run/vm1.sock"), "options.qmp: 'run/vm1.sock' is not an absolute"),
        (bmc("/" + "x" * 120), "longer than 107 bytes"),
        (bmc("/run/vm1.sock", timeout="soon"), "options.timeout: 'soon'"),
        (bmc("/run/vm1.sock", timeout="0"), "options.timeout: '0'"),
    ],
)
def test_validate_names_the_field(given_bmc: Bmc, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QemuDriver.validate(given_bmc)


def test_validate_accepts_a_socket_path_in_host_or_options() -> None:
    QemuDriver.validate(bmc("/run/metalflow/vm1.qmp"))
    QemuDriver.validate(bmc("vm1", qmp="/run/metalflow/vm1.qmp", timeout="0.5"))


class StandInQemu:
    """A QMP server on a unix socket that answers from `status` and `refuse`, like QEMU."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.status = "running"
        self.refuse: dict[str, str] = {}
        self.commands: list[str] = []
        self.greet = True
        self.before_greeting = b""
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(str(path))
        self._listener.listen()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as stream:
                if not self.greet:
                    stream.read()
                    continue
                conn.sendall(self.before_greeting + line(GREETING))
                for raw in stream:
                    message = json.loads(raw)
                    command = message["execute"]
                    self.commands.append(command)
                    conn.sendall(self._answer(message, command))

    def _answer(self, message: dict[str, Any], command: str) -> bytes:
        if command in self.refuse:
            error = {"class": "GenericError", "desc": self.refuse[command]}
            return line({"error": error, "id": message["id"]})
        if command == "query-status":
            return answer(message, {"status": self.status, "running": self.status == "running"})
        if command == "query-block":
            return answer(message, [{"device": "cd0", "removable": True, "qdev": "cdrom0"}])
        if command == "system_reset":
            self.status = "running" if self.status == "running" else "prelaunch"
            return line({"event": "RESET", "data": {"guest": False}}) + answer(message)
        if command == "cont":
            self.status = "running"
        return answer(message)

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()


@pytest.fixture
def qemu() -> Iterator[StandInQemu]:
    with tempfile.TemporaryDirectory(prefix="mf-qmp-") as directory:
        stand_in = StandInQemu(Path(directory) / "qmp.sock")
        yield stand_in
        stand_in.close()


def driver_for(qemu: StandInQemu, **options: str) -> QemuDriver:
    return QemuDriver(bmc(str(qemu.path), **options))


@pytest.mark.parametrize("status", RUN_STATES)
def test_power_state_reads_query_status(qemu: StandInQemu, status: str) -> None:
    qemu.status = status
    assert driver_for(qemu).power_state() is power_state_of(status)


def test_a_stop_left_from_the_last_session_does_not_fail_the_next(qemu: StandInQemu) -> None:
    qemu.status = "shutdown"
    qemu.before_greeting = line({"event": "STOP", "timestamp": {"seconds": 1}})
    driver = driver_for(qemu)
    assert driver.power_state() is PowerState.OFF
    driver.set_power(PowerAction.ON)
    assert qemu.status == "running"
    assert driver.power_state() is PowerState.ON


def test_on_after_a_guest_shutdown_resets_before_it_continues(qemu: StandInQemu) -> None:
    qemu.status = "shutdown"
    driver_for(qemu).set_power(PowerAction.ON)
    assert qemu.commands == ["qmp_capabilities", "query-status", "system_reset", "cont"]
    assert qemu.status == "running"


def test_a_refusal_is_a_permanent_power_error_in_qemus_words(qemu: StandInQemu) -> None:
    qemu.status = "paused"
    qemu.refuse["cont"] = "Migration is not supported"
    with pytest.raises(PowerError) as raised:
        driver_for(qemu).set_power(PowerAction.ON)
    assert not raised.value.transient
    assert raised.value.action == "power on"
    assert raised.value.message == "QEMU refused cont: Migration is not supported"


def test_a_monitor_held_by_another_client_is_transient(qemu: StandInQemu) -> None:
    qemu.greet = False
    with pytest.raises(PowerError, match="one QMP client at a time") as raised:
        driver_for(qemu, timeout="0.2").power_state()
    assert raised.value.transient


def test_without_a_qemu_the_vm_is_off_and_on_says_why(tmp_path: Path) -> None:
    driver = QemuDriver(bmc(str(tmp_path / "gone.sock")))
    assert driver.power_state() is PowerState.OFF
    driver.set_power(PowerAction.OFF)
    driver.set_power(PowerAction.SOFT_OFF)
    for action in (PowerAction.ON, PowerAction.CYCLE, PowerAction.RESET):
        with pytest.raises(PowerError, match="cannot start one") as raised:
            driver.set_power(action)
        assert not raised.value.transient
    with pytest.raises(PowerError, match="cannot start one"):
        driver.probe()


def test_the_firmware_setup_screen_is_unsupported(tmp_path: Path) -> None:
    driver = QemuDriver(bmc(str(tmp_path / "gone.sock")))
    with pytest.raises(Unsupported, match="firmware setup"):
        driver.set_boot_device(BootRequest(BootDevice.BIOS))


def test_a_url_qemu_cannot_open_names_the_package_that_can(qemu: StandInQemu) -> None:
    qemu.refuse["blockdev-change-medium"] = "Unknown protocol 'https'"
    with pytest.raises(PowerError, match="qemu-block-extra") as raised:
        driver_for(qemu).insert_media("https://192.0.2.1/hook.iso")
    assert raised.value.message.startswith("QEMU refused blockdev-change-medium: Unknown protocol")
