"""/init and the udhcpc hook: rendered text, shell syntax, and their functions run by a real sh."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metalflow.installenv import init

MODULES = [
    "/usr/lib/modules/6.1.0-57-cloud-amd64/kernel/drivers/virtio/virtio_ring.ko",
    "/usr/lib/modules/6.1.0-57-cloud-amd64/kernel/drivers/net/virtio_net.ko",
]
SHELLS = [name for name in ("sh", "dash", "busybox") if shutil.which(name)]


def shell(name: str) -> list[str]:
    return ["busybox", "sh"] if name == "busybox" else [name]


def run_sh(script: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return proc.stdout


def test_modules_are_loaded_in_the_given_order_with_full_paths() -> None:
    text = init.render_init(init.InitConfig(MODULES))
    line = next(line for line in text.splitlines() if "for module in" in line)
    assert line.split(" in ", 1)[1] == f"{MODULES[0]} {MODULES[1]}; do"
    assert 'insmod "$module"' in text


def test_the_script_never_ends_without_a_rescue_shell() -> None:
    text = init.render_init(init.InitConfig(MODULES))
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0] == "#!/bin/sh"
    assert lines[-1].startswith("rescue ")
    assert "exec python3" not in text
    assert f"python3 {init.AGENT_PATH}" in text
    assert "poweroff -f" in text and "metalflow.selftest" in text
    assert "from metalflow.agent.__main__ import main" in text


@pytest.mark.parametrize("name", SHELLS)
def test_scripts_parse_in_real_shells(name: str, tmp_path: Path) -> None:
    scripts = (
        init.render_init(init.InitConfig(MODULES)),
        init.render_udhcpc_script(),
        init.render_udhcpc_script(lease_file="/run/lease"),
    )
    for script in scripts:
        path = tmp_path / "script"
        path.write_text(script)
        subprocess.run([*shell(name), "-n", str(path)], check=True)


def functions(tmp_path: Path) -> Path:
    path = tmp_path / "functions.sh"
    path.write_text(init.render_functions(init.InitConfig(MODULES)))
    return path


@pytest.mark.parametrize(
    ("cmdline", "key", "value"),
    [
        (
            "console=ttyS0 metalflow.mac=52:54:00:12:34:56 quiet",
            "metalflow.mac",
            "52:54:00:12:34:56",
        ),
        ("metalflow.selftest=1", "metalflow.selftest", "1"),
        ("metalflow.selftest=0 metalflow.selftest=1", "metalflow.selftest", "1"),
        ("metalflow.selftestx=1", "metalflow.selftest", ""),
        ("metalflow.url=http://192.0.2.1:7080/a=b", "metalflow.url", "http://192.0.2.1:7080/a=b"),
        ("", "metalflow.mac", ""),
    ],
)
def test_cmdline_value(tmp_path: Path, cmdline: str, key: str, value: str) -> None:
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    out = run_sh(
        f". {functions(tmp_path)}; cmdline_value {key}",
        {"METALFLOW_CMDLINE_FILE": str(tmp_path / "cmdline")},
    )
    assert out == value + "\n"


# Every example starts a shell: under load one takes far longer than the code in it, but not 10 s.
@settings(deadline=timedelta(seconds=10))
@given(st.lists(st.integers(0, 255), min_size=6, max_size=6), st.sampled_from([":", "-"]))
def test_normalise_mac(octets: list[int], separator: str) -> None:
    mac = separator.join(f"{octet:02X}" for octet in octets)
    out = subprocess.run(
        [
            "sh",
            "-c",
            f'{init.render_functions(init.InitConfig([]))}\nnormalise_mac "$1"',
            "sh",
            mac,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == ":".join(f"{octet:02x}" for octet in octets) + "\n"


def fake_nics(tmp_path: Path, nics: dict[str, str]) -> Path:
    net = tmp_path / "net"
    for name, mac in nics.items():
        (net / name).mkdir(parents=True)
        (net / name / "address").write_text(mac + "\n")
    return net


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ("", "eth0 eth1"),
        ("metalflow.mac=52-54-00-00-00-02", "eth1"),
        ("metalflow.mac=52:54:00:00:00:99", "eth0 eth1"),
    ],
)
def test_nics_prefers_the_one_named_on_the_cmdline(
    tmp_path: Path, cmdline: str, expected: str
) -> None:
    net = fake_nics(
        tmp_path,
        {
            "lo": "00:00:00:00:00:00",
            "eth0": "52:54:00:00:00:01",
            "eth1": "52:54:00:00:00:02",
            "tunl0": "00:00:00:00:00:00",
        },
    )
    (tmp_path / "cmdline").write_text(cmdline)
    out = run_sh(
        f". {functions(tmp_path)}; nics",
        {"METALFLOW_CMDLINE_FILE": str(tmp_path / "cmdline"), "METALFLOW_NET_DIR": str(net)},
    )
    assert out.split() == expected.split()


def test_udhcpc_hook_configures_address_routes_and_dns(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "ip.log"
    (bin_dir / "ip").write_text(f'#!/bin/sh\necho "ip $*" >> {log}\n')
    (bin_dir / "ip").chmod(0o755)
    hook = tmp_path / "default.script"
    hook.write_text(init.render_udhcpc_script())
    hook.chmod(0o755)
    resolv = tmp_path / "resolv.conf"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RESOLV_CONF": str(resolv),
        "interface": "eth0",
        "ip": "192.0.2.10",
        "mask": "24",
        "broadcast": "192.0.2.255",
        "router": "192.0.2.1 192.0.2.254",
        "dns": "192.0.2.53 192.0.2.54",
        "domain": "example.test",
        "staticroutes": "198.51.100.0/24 192.0.2.2",
        "mtu": "9000",
    }
    subprocess.run([str(hook), "bound"], env=env, check=True)
    assert log.read_text().splitlines() == [
        "ip -4 addr flush dev eth0",
        "ip -4 addr add 192.0.2.10/24 broadcast 192.0.2.255 dev eth0",
        "ip link set eth0 mtu 9000",
        "ip -4 route replace 198.51.100.0/24 via 192.0.2.2 dev eth0",
        "ip -4 route add default via 192.0.2.1 dev eth0 metric 0",
        "ip -4 route add default via 192.0.2.254 dev eth0 metric 1",
    ]
    assert resolv.read_text() == (
        "search example.test\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n"
    )
    log.unlink()
    subprocess.run([str(hook), "deconfig"], env=env, check=True)
    assert log.read_text().splitlines() == ["ip -4 addr flush dev eth0", "ip link set eth0 up"]


def test_udhcpc_hook_leaves_the_lease_for_a_script_to_source(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ip").write_text("#!/bin/sh\n")
    (bin_dir / "ip").chmod(0o755)
    lease = tmp_path / "the lease"
    hook = tmp_path / "default.script"
    hook.write_text(init.render_udhcpc_script(lease_file=str(lease)))
    hook.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RESOLV_CONF": str(tmp_path / "resolv.conf"),
        "interface": "eth0",
        "ip": "192.0.2.10",
        "mask": "24",
        "serverid": "192.0.2.1",
        "staticroutes": "198.51.100.0/24 192.0.2.2",
    }
    subprocess.run([str(hook), "deconfig"], env=env, check=True)
    assert not lease.exists()
    subprocess.run([str(hook), "bound"], env=env, check=True)
    sourced = run_sh(f'. "{lease}"; echo "$LEASE_IP $LEASE_SERVER"', {})
    assert sourced.strip() == "192.0.2.10 192.0.2.1"
    assert str(lease) not in init.render_udhcpc_script()
