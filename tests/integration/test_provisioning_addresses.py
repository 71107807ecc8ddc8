"""A machine applied without a typed IP gets its booting interface's address from a provider
pool marked `provisioning`, on SQLite and PostgreSQL: the API and the boot index show it, a
re-apply keeps it, the next machine gets the next one, deletion quarantines it, and without such
a pool nothing changes."""

from __future__ import annotations

import ipaddress
from typing import Any

import httpx

from metalflow.index.store import load_views
from metalflow.index.views import MachineIndex
from metalflow.inventory.service import get_machine, set_netboot
from tests.integration.conftest import LiveServer, apply

POOL = """\
apiVersion: metalflow/v1
kind: Prefix
spec: {cidr: 172.30.0.0/24, kind: private, provisioning: true}
"""


def machine(
    name: str, mac: str, *, extra: str = "", second: str | None = None, label: str = "a"
) -> str:
    interfaces = f'    - mac: "{mac}"\n{extra}'
    if second is not None:
        interfaces += f'    - mac: "{second}"\n      netboot: {{allowPXE: false}}\n'
    return (
        "apiVersion: metalflow/v1\nkind: Machine\n"
        f"metadata: {{name: {name}, labels: {{rack: {label}}}}}\n"
        f"spec:\n  interfaces:\n{interfaces}"
    )


def applied(api: httpx.Client, text: str) -> list[str]:
    response = apply(api, text)
    assert response.status_code == 200, response.text
    return [item["action"] for item in response.json()["results"]]


def interfaces(api: httpx.Client, name: str) -> list[tuple[Any, ...]]:
    response = api.get(f"/api/v1/machines/{name}")
    assert response.status_code == 200, response.text
    return [(i["mac"], i["ip"], i["netmask"], i["gateway"]) for i in response.json()["interfaces"]]


def block(api: httpx.Client, cidr: str) -> tuple[Any, ...]:
    response = api.get(f"/api/v1/ipam/prefixes/{cidr}")
    assert response.status_code == 200, response.text
    found = response.json()
    return found["status"], found["machine"]


def get_id(live: LiveServer, name: str) -> str:
    with live.services.db.read() as session:
        return get_machine(session, name).id


def index_answer(live: LiveServer, name: str, address: str) -> str | None:
    """Which MAC the boot index's reservation lookup finds for `address`."""
    index = MachineIndex()
    with live.services.db.read() as session:
        index.replace_all(load_views(session))
    found = index.by_ip(ipaddress.IPv4Address(address))
    if found is None:
        return None
    view, iface = found
    assert view.name == name
    return iface.mac


def test_the_booting_interface_gets_a_pool_address_kept_on_reapply_and_quarantined_on_delete(
    live: LiveServer, api: httpx.Client
) -> None:
    assert applied(api, POOL) == ["created"]
    mac, other = "52:54:00:70:00:01", "52:54:00:70:00:02"
    assert applied(api, machine("web1", mac, second=other)) == ["created"]

    assert interfaces(api, "web1") == [
        (mac, "172.30.0.2", "255.255.255.0", "172.30.0.1"),
        (other, None, None, None),
    ]
    assert block(api, "172.30.0.2/32") == ("assignment", get_id(live, "web1"))
    assert index_answer(live, "web1", "172.30.0.2") == mac

    assert applied(api, machine("web1", mac, second=other, label="b")) == ["updated"]
    assert interfaces(api, "web1")[0][1] == "172.30.0.2"

    assert applied(api, machine("web2", "52:54:00:70:00:03")) == ["created"]
    assert interfaces(api, "web2")[0][1:] == ("172.30.0.3", "255.255.255.0", "172.30.0.1")

    assert api.delete("/api/v1/machines/web1").status_code == 204
    assert block(api, "172.30.0.2/32") == ("quarantine", None)
    assert index_answer(live, "web1", "172.30.0.2") is None
    assert applied(api, machine("web3", "52:54:00:70:00:04")) == ["created"]
    assert interfaces(api, "web3")[0][1] == "172.30.0.4", "a quarantined address waits"


def test_a_provisioned_machine_keeps_its_address_when_its_manifest_changes(
    live: LiveServer, api: httpx.Client
) -> None:
    """A finished workflow turns netboot off; the booting interface is the declared one."""
    applied(api, POOL)
    mac = "52:54:00:70:00:11"
    applied(api, machine("web1", mac))
    with live.services.db.write() as session:
        set_netboot(get_machine(session, "web1"), False)

    assert applied(api, machine("web1", mac, label="b")) == ["updated"]
    assert interfaces(api, "web1") == [(mac, "172.30.0.2", "255.255.255.0", "172.30.0.1")]


def test_declared_addresses_win_and_are_never_handed_to_another_machine(
    api: httpx.Client,
) -> None:
    typed = "      ip: 172.30.0.2\n      netmask: 255.255.0.0\n"
    mask_only = "      netmask: 255.255.0.0\n      gateway: 172.30.0.254\n"
    stream = "---\n".join(
        [
            machine("static", "52:54:00:70:00:21", extra=typed),
            machine("masked", "52:54:00:70:00:22", extra=mask_only),
            POOL,
        ]
    )
    assert applied(api, stream) == ["created", "created", "created"], "the pool comes first"

    assert interfaces(api, "static") == [("52:54:00:70:00:21", "172.30.0.2", "255.255.0.0", None)]
    assert interfaces(api, "masked") == [
        ("52:54:00:70:00:22", "172.30.0.3", "255.255.0.0", "172.30.0.254")
    ]
    skipped = api.get("/api/v1/ipam/prefixes/172.30.0.2/32").json()
    assert (skipped["machine"], skipped["description"]) == (
        None,
        "172.30.0.2 is declared by machine static: never handed out",
    )


def test_without_an_ipv4_provisioning_pool_nothing_is_given(api: httpx.Client) -> None:
    v6 = POOL.replace("172.30.0.0/24, kind: private", "2001:db8:70::/64, kind: public")
    plain = POOL.replace("provisioning: true", "provisioning: false")
    assert applied(api, v6 + "---\n" + plain) == ["created", "created"]

    assert applied(api, machine("web1", "52:54:00:70:00:31")) == ["created"]

    assert interfaces(api, "web1") == [("52:54:00:70:00:31", None, None, None)]
    assignments = api.get("/api/v1/ipam/prefixes", params={"status": "assignment"}).json()
    assert assignments["items"] == []
