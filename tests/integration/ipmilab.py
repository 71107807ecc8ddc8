"""BMCs on this machine: OpenIPMI's ipmi_sim, one process per BMC, on loopback.

Loopback, not a network namespace: the client under test (pyghmi) runs in the test process, so a
namespace would need a veth pair, addresses and root only to carry the same UDP datagrams. Every
instance gets kernel-chosen ports (its LAN port and the TCP port of its "serial" line for a VM),
its own state directory and config under the test's tmp dir, so parallel runs never meet.

A BMC's "machine" is ipmi_sim's `startcmd`, started on power on and killed on power off:
- `start()`: `/bin/sleep 3600`, a stand-in that costs nothing (on, off, cycle and status work;
  reset and soft-off need a VM on the serial line and are refused with 0xCC);
- `start(vm=True)`: a QEMU VM with an `ipmi-bmc-extern` device connected back to the serial line,
  so the BMC really starts and stops a computer.
`close()` ends every process it started (ipmi_sim leaves its startcmd running when it exits).
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from metalflow.power.driver import Bmc
from tests.prerequisites import needs_tool

HOST = "127.0.0.1"
USERNAME = "admin"
PASSWORD = "Ipmi-S3cret-9"
"""Not a word any message uses, so a test can tell a leak from an error's own text."""
OPERATOR = ("operator", "0perat0r-Pw")
TCP_ESTABLISHED = "01"
_names = itertools.count()

LAN_CONF = """\
name "{name}"
set_working_mc 0x20
  startlan 1
    addr {host} {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  serial 15 {host} {serial_port} codec VM
  startcmd "{startcmd}"
  startnow false
  poweroff_wait 5
  kill_wait 5
  user 2 true "{username}" "{password}" admin 10 none md2 md5 straight
  user 3 true "{operator}" "{operator_password}" operator 10 none md2 md5 straight
"""

SIM_EMU = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
"""
"""One BMC at IPMB 0x20 reporting firmware 9.08, manufacturer 0x1291 and product 0xf02."""

VM_SH = """\
#!/bin/sh
exec {qemu} -accel tcg -machine pc -m 128 -nodefaults -no-user-config -display none \\
  -serial none -monitor none -nic none -pidfile {pidfile} \\
  -chardev socket,id=ipmi0,host={host},port={serial_port},reconnect=10 \\
  -device ipmi-bmc-extern,chardev=ipmi0,id=bmc0 -device isa-ipmi-kcs,bmc=bmc0 \\
  2>>{log}
"""


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 20) -> None:
    """Poll `condition` until true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:g} s")
        time.sleep(0.05)


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _sockets(table: str, port: int) -> list[str]:
    """The states of this namespace's sockets bound to HOST:port (/proc/net/udp or tcp)."""
    local = f"0100007F:{port:04X}"
    lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
    return [fields[3] for fields in map(str.split, lines) if fields[1] == local]


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie has ended; its parent just has not reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


@dataclass
class IpmiSim:
    """One running ipmi_sim and the BMC record that reaches it."""

    name: str
    port: int
    serial_port: int
    directory: Path
    process: subprocess.Popen[bytes]
    pidfile: Path | None = None
    """The VM's pidfile, for instances started with `vm=True`."""

    def bmc(self, **changes: object) -> Bmc:
        bmc = Bmc(driver="ipmi", host=HOST, port=self.port, username=USERNAME, password=PASSWORD)
        return replace(bmc, **changes)  # type: ignore[arg-type]

    def ipmitool(self, *args: str) -> str:
        """An independent client's view of the BMC (cipher suite 3: ipmi_sim has no other)."""
        argv = ["ipmitool", "-I", "lanplus", "-C", "3", "-H", HOST, "-p", str(self.port)]
        argv += ["-U", USERNAME, "-P", PASSWORD, *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise AssertionError(f"ipmitool {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def power(self) -> str:
        """'on' or 'off' as ipmitool reads it."""
        return self.ipmitool("chassis", "power", "status").split()[-1]

    def sessions(self) -> int:
        """Active sessions on the BMC, not counting the ipmitool one that asks."""
        answer = self.ipmitool("raw", "0x06", "0x3d", "0x00").split()
        return int(answer[2], 16) - 1

    def machine(self) -> list[int]:
        """PIDs of the running startcmd (the sleep stand-in or the VM); empty when off."""
        return [pid for pid in _children(self.process.pid) if alive(pid)]

    def vm_pid(self) -> int | None:
        """The VM's PID from its pidfile while that very VM runs (not a reused PID)."""
        if self.pidfile is None or not self.pidfile.exists():
            return None
        text = self.pidfile.read_text().strip()
        if not text or not alive(int(text)):
            return None
        try:
            cmdline = Path(f"/proc/{text}/cmdline").read_bytes()
        except FileNotFoundError:
            return None
        return int(text) if str(self.pidfile).encode() in cmdline else None

    def vm_connected(self) -> bool:
        """Whether a VM holds the serial line: ipmi_sim refuses reset and soft-off until then."""
        return TCP_ESTABLISHED in _sockets("tcp", self.serial_port)

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """The BMC stops answering (SIGSTOP) for the block, then carries on."""
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """End ipmi_sim and its machine: frozen first, so it cannot start another meanwhile."""
        running = self.process.poll() is None
        if running:
            self.process.send_signal(signal.SIGSTOP)
        machine = set(self.machine())
        vm = self.vm_pid()
        if vm is not None:
            machine.add(vm)
        for pid in machine:
            os.kill(pid, signal.SIGKILL)
        if running:
            self.process.terminate()
            self.process.send_signal(signal.SIGCONT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        wait_for("the BMC's machine to end", lambda: not any(alive(pid) for pid in machine))


@dataclass
class IpmiLab:
    tmp: Path
    sims: list[IpmiSim] = field(default_factory=list)

    def start(self, *, vm: bool = False) -> IpmiSim:
        """A new ipmi_sim, listening once this returns; its machine is off."""
        needs_tool("ipmi_sim", "openipmi")
        needs_tool("ipmitool", "ipmitool")
        qemu = needs_tool("qemu-system-x86_64", "qemu-system-x86") if vm else None
        for _attempt in range(3):
            sim = self._launch(qemu)
            if sim is not None:
                self.sims.append(sim)
                return sim
        raise AssertionError("ipmi_sim did not start in 3 attempts (ports taken?)")

    def _launch(self, qemu: str | None) -> IpmiSim | None:
        name = f"bmc{next(_names)}"
        directory = self.tmp / name
        (directory / "state").mkdir(parents=True)
        port, serial_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
        startcmd, pidfile = "/bin/sleep 3600", None
        if qemu is not None:
            pidfile = directory / "vm.pid"
            script = directory / "vm.sh"
            script.write_text(
                VM_SH.format(
                    qemu=qemu,
                    pidfile=pidfile,
                    host=HOST,
                    serial_port=serial_port,
                    log=directory / "vm.log",
                )
            )
            script.chmod(0o755)
            startcmd = str(script)
        (directory / "lan.conf").write_text(
            LAN_CONF.format(
                name=name,
                host=HOST,
                port=port,
                serial_port=serial_port,
                startcmd=startcmd,
                username=USERNAME,
                password=PASSWORD,
                operator=OPERATOR[0],
                operator_password=OPERATOR[1],
            )
        )
        (directory / "sim.emu").write_text(SIM_EMU)
        log = (directory / "ipmi_sim.log").open("wb")
        process = subprocess.Popen(
            ["ipmi_sim", "-n", "-c", "lan.conf", "-f", "sim.emu", "-s", "state"],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        sim = IpmiSim(name, port, serial_port, directory, process, pidfile)
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            if _sockets("udp", port) and _sockets("tcp", serial_port):
                return sim
            time.sleep(0.02)
        sim.stop()
        return None

    def close(self) -> None:
        for sim in reversed(self.sims):
            sim.stop()
