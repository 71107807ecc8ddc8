"""metalflow answers the router solicitations of known machines (rdisc6, the ndisc6 client):
an advertisement with router lifetime 0 and no prefix; unknown machines get nothing."""

from __future__ import annotations

from tests.integration.bootlab import BootLab, Metalflow
from tests.manifests import machine_yaml
from tests.prerequisites import needs_tool

KNOWN = "52:54:00:00:aa:01"
UNKNOWN = "52:54:00:00:aa:02"


def solicit(lab: BootLab, mac: str) -> tuple[int, str]:
    rdisc6 = needs_tool("rdisc6", "ndisc6")
    host = lab.host(mac)
    host.run(["sysctl", "-q", "-w", "net.ipv6.conf.eth0.accept_ra=0"])
    host.run(["ip", "link", "set", "eth0", "up"])
    # rdisc6 needs the link-local address out of duplicate address detection first.
    for _ in range(50):
        if "tentative" not in host.run(["ip", "-6", "addr", "show", "dev", "eth0"]).stdout:
            break
        host.run(["sleep", "0.1"])
    done = host.run([rdisc6, "-1", "-n", "-r", "3", "-w", "1000", "eth0"], check=False)
    return done.returncode, done.stdout + done.stderr


def register(metalflow: Metalflow, mac: str) -> None:
    with metalflow.api() as api:
        applied = api.post(
            "/api/v1/apply",
            content=machine_yaml("ra1", mac).encode(),
            headers={"Content-Type": "application/yaml"},
        )
        assert applied.status_code == 200, applied.text


def test_known_machine_gets_an_advertisement_that_announces_nothing(lab: BootLab) -> None:
    metalflow = lab.metalflow()
    register(metalflow, KNOWN)
    code, output = solicit(lab, KNOWN)
    assert code == 0, output
    assert "Router lifetime" in output and "0 (0x00000000) seconds" in output, output
    assert "Prefix" not in output, output
    assert "Stateful address conf.    :           No" in output, output
    with metalflow.api() as api:
        metrics = api.get("/metrics").text
    assert 'metalflow_ipv6_ra_total{outcome="answered"} 1' in metrics


def test_unknown_machine_gets_no_advertisement(lab: BootLab) -> None:
    metalflow = lab.metalflow()
    code, output = solicit(lab, UNKNOWN)
    assert code != 0, output
    with metalflow.api() as api:
        metrics = api.get("/metrics").text
    assert 'metalflow_ipv6_ra_total{outcome="not in inventory"}' in metrics


def test_no_ipv6_ra_turns_it_off(lab: BootLab) -> None:
    register(lab.metalflow("--no-ipv6-ra"), KNOWN)
    code, output = solicit(lab, KNOWN)
    assert code != 0, output
