"""`metalflow dhcp leases`."""

from __future__ import annotations

from tests.unit.cli.fakes import FakeServer, Run

LEASE = {
    "mac": "52:54:00:cc:00:01",
    "address": "192.0.2.100",
    "subnet": "192.0.2.0/24",
    "hostname": "probe",
    "expires_at": "2026-12-02T09:00:00+00:00",
    "updated_at": "2026-12-01T09:00:00+00:00",
}


def test_leases_table(server: FakeServer, run: Run) -> None:
    server.reply("GET", "/api/v1/dhcp/leases", {"items": [LEASE], "count": 1})

    result = run("dhcp", "leases")

    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["ADDRESS", "MAC", "SUBNET", "HOSTNAME", "EXPIRES"]
    assert row.split()[:4] == ["192.0.2.100", "52:54:00:cc:00:01", "192.0.2.0/24", "probe"]


def test_leases_json_by_subnet(server: FakeServer, run: Run) -> None:
    server.reply("GET", "/api/v1/dhcp/leases", {"items": [LEASE], "count": 1})

    result = run("-o", "json", "dhcp", "leases", "--subnet", "192.0.2.0/24")

    assert result.exit_code == 0, result.output
    assert '"address": "192.0.2.100"' in result.stdout
    assert server.requests[-1].url.params["subnet"] == "192.0.2.0/24"
