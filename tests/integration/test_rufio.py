"""rufio's Machine and Secret applied over the API as Tinkerbell users write them: a Hardware's
bmcRef gives the machine its BMC, in one stream or across applies, and the Secret's values show
up nowhere but (encrypted) in the database."""

from __future__ import annotations

import base64

import httpx
import pytest

from metalflow.inventory.service import get_machine
from metalflow.power.driver import Bmc
from metalflow.power.service import bmc_of
from tests.integration.conftest import LiveServer, apply
from tests.integration.test_api import results
from tests.manifests import simple_template

PASSWORD = "t0p-Secret"
NEW_PASSWORD = "n3w-Secret"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(password: str = PASSWORD) -> str:
    return f"""\
apiVersion: v1
kind: Secret
metadata: {{name: bmc1-auth, namespace: lab}}
type: Opaque
data:
  username: {b64("admin")}
  password: {b64(password)}
"""


def rufio_machine(host: str = "192.0.2.200", secret_name: str = "bmc1-auth") -> str:
    return f"""\
apiVersion: bmc.tinkerbell.org/v1alpha1
kind: Machine
metadata: {{name: bmc1, namespace: lab}}
spec:
  connection:
    host: {host}
    port: 623
    authSecretRef: {{name: {secret_name}, namespace: lab}}
    insecureTLS: true
    providerOptions:
      redfish: {{port: 8443, systemName: System.Embedded.1}}
"""


def hardware(name: str = "hw1", mac: str = "52:54:00:aa:bb:01", bmc: str = "bmc1") -> str:
    return f"""\
apiVersion: tinkerbell.org/v1alpha1
kind: Hardware
metadata: {{name: {name}, namespace: lab}}
spec:
  bmcRef: {{apiGroup: bmc.tinkerbell.org, kind: Machine, name: {bmc}}}
  interfaces:
    - dhcp: {{mac: "{mac}", arch: x86_64, uefi: true}}
      netboot: {{allowPXE: true, allowWorkflow: true}}
"""


def stream(*docs: str) -> str:
    return "---\n".join(docs)


def driver_bmc(live: LiveServer, name: str) -> Bmc:
    """What a power job's driver gets for the machine, the password decrypted."""
    with live.services.db.read() as session:
        bmc = bmc_of(get_machine(session, name), live.services.keyring)
    assert bmc is not None
    return bmc


def login_of(live: LiveServer, name: str) -> tuple[str | None, str | None, str]:
    bmc = driver_bmc(live, name)
    return bmc.username, bmc.password, bmc.host


def assert_no_secret(text: str) -> None:
    for value in (PASSWORD, b64(PASSWORD), NEW_PASSWORD, b64(NEW_PASSWORD)):
        assert value not in text


def test_one_stream_gives_the_hardware_its_rufio_bmc(live: LiveServer, api: httpx.Client) -> None:
    docs = stream(hardware(), rufio_machine(), secret())
    response = apply(api, docs)
    assert_no_secret(response.text)
    assert results(response) == [
        ("Secret", "bmc1-auth", "created"),
        ("Machine.bmc.tinkerbell.org", "bmc1", "created"),
        ("Machine", "hw1", "created"),
    ]
    shown = api.get("/api/v1/machines/hw1")
    assert_no_secret(shown.text)
    assert shown.json()["bmc"] == {
        "driver": "redfish",
        "address": "192.0.2.200",
        "port": 8443,
        "username": "admin",
        "has_password": True,
        "insecure_tls": True,
        "options": {"system": "System.Embedded.1"},
    }
    bmc = driver_bmc(live, "hw1")
    assert (bmc.driver, bmc.host, bmc.port, bmc.insecure_tls) == (
        "redfish",
        "192.0.2.200",
        8443,
        True,
    )
    assert (bmc.username, bmc.password) == ("admin", PASSWORD)
    assert dict(bmc.options) == {"system": "System.Embedded.1"}
    assert [r[2] for r in results(apply(api, docs))] == ["unchanged"] * 3
    events = api.get("/api/v1/events", params={"limit": 1000})
    assert_no_secret(events.text)
    assert "bmc.secret.created" in events.text


def test_a_later_hardware_finds_the_rufio_machine_applied_before(
    live: LiveServer, api: httpx.Client
) -> None:
    assert len(results(apply(api, stream(secret(), rufio_machine())))) == 2
    assert results(apply(api, hardware())) == [("Machine", "hw1", "created")]
    assert login_of(live, "hw1") == ("admin", PASSWORD, "192.0.2.200")


def test_a_changed_secret_or_rufio_machine_reaches_the_hardware_applied_before(
    live: LiveServer, api: httpx.Client
) -> None:
    results(apply(api, stream(secret(), rufio_machine(), hardware())))
    results(apply(api, hardware("hw2", "52:54:00:aa:bb:02")))
    response = apply(api, secret(NEW_PASSWORD))
    assert_no_secret(response.text)
    assert results(response) == [
        ("Secret", "bmc1-auth", "updated"),
        ("Machine", "hw1", "updated"),
        ("Machine", "hw2", "updated"),
    ]
    assert login_of(live, "hw1") == ("admin", NEW_PASSWORD, "192.0.2.200")
    assert login_of(live, "hw2") == ("admin", NEW_PASSWORD, "192.0.2.200")
    # A Hardware in the same stream takes its BMC from its own document: listed once.
    assert results(apply(api, stream(rufio_machine("192.0.2.222"), hardware()))) == [
        ("Machine.bmc.tinkerbell.org", "bmc1", "updated"),
        ("Machine", "hw2", "updated"),
        ("Machine", "hw1", "updated"),
    ]
    assert login_of(live, "hw1")[2] == login_of(live, "hw2")[2] == "192.0.2.222"
    assert api.get("/api/v1/machines/hw2").json()["bmc"]["address"] == "192.0.2.222"
    # The Hardware's own declaration is untouched: re-applying it changes nothing.
    assert results(apply(api, hardware("hw2", "52:54:00:aa:bb:02"))) == [
        ("Machine", "hw2", "unchanged")
    ]
    # A new login beside its unchanged rufio Machine still reaches every machine, once.
    assert results(apply(api, stream(rufio_machine("192.0.2.222"), secret()))) == [
        ("Secret", "bmc1-auth", "updated"),
        ("Machine.bmc.tinkerbell.org", "bmc1", "unchanged"),
        ("Machine", "hw1", "updated"),
        ("Machine", "hw2", "updated"),
    ]
    assert login_of(live, "hw2") == ("admin", PASSWORD, "192.0.2.222")


def test_dry_run_stores_no_rufio_object(api: httpx.Client) -> None:
    response = apply(api, stream(secret(), rufio_machine()), dry_run=True)
    assert [r["action"] for r in response.json()["results"]] == ["created", "created"]
    assert apply(api, hardware()).status_code == 422


@pytest.mark.parametrize(
    ("docs", "field", "words"),
    [
        (
            [hardware(bmc="nowhere")],
            "documents[0].spec.bmcRef.name",
            "no rufio Machine lab/nowhere",
        ),
        (
            [rufio_machine(secret_name="gone"), hardware()],
            "documents[0].spec.connection.authSecretRef.name",
            "Secret lab/gone is not in this apply",
        ),
        (
            [secret().replace(f"  password: {b64(PASSWORD)}\n", ""), rufio_machine(), hardware()],
            "documents[1].spec.connection.authSecretRef.name",
            "Secret lab/bmc1-auth has no password",
        ),
        (
            [secret().replace(b64(PASSWORD), f'"*{b64(PASSWORD)}"'), rufio_machine()],
            "documents[0].data.password",
            "not valid base64",
        ),
        (
            [secret(), rufio_machine(host="not a host!"), hardware()],
            "documents[1].spec.connection.host",
            "is not a host name",
        ),
    ],
)
def test_errors_name_the_field_and_write_nothing(
    api: httpx.Client, docs: list[str], field: str, words: str
) -> None:
    response = apply(api, stream(*docs))
    assert response.status_code == 422, response.text
    assert_no_secret(response.text)
    detail = response.json()["detail"]
    assert detail["field"] == field
    assert words in detail["message"]
    assert api.get("/api/v1/machines/hw1").status_code == 404
    assert apply(api, hardware()).status_code == 422  # no rufio Machine was kept either


def test_a_secret_losing_its_password_is_refused_while_a_machine_uses_it(
    live: LiveServer, api: httpx.Client
) -> None:
    results(apply(api, stream(secret(), rufio_machine(), hardware())))
    response = apply(api, secret().replace(f"  password: {b64(PASSWORD)}\n", ""))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["field"] == "documents[0].data"
    assert "Secret lab/bmc1-auth has no password" in detail["message"]
    assert login_of(live, "hw1") == ("admin", PASSWORD, "192.0.2.200")


def test_metalflow_machine_bmc_port_tls_and_options(live: LiveServer, api: httpx.Client) -> None:
    doc = """\
apiVersion: metalflow/v1
kind: Machine
metadata: {name: m1}
spec:
  interfaces: [{mac: "52:54:00:00:00:11"}]
  bmc:
    driver: redfish
    address: 192.0.2.9
    port: 8443
    insecure_tls: true
    username: root
    password: calvin
    options: {system: "1", power_timeout: 300}
"""
    assert results(apply(api, doc)) == [("Machine", "m1", "created")]
    shown = api.get("/api/v1/machines/m1").json()["bmc"]
    assert shown == {
        "driver": "redfish",
        "address": "192.0.2.9",
        "port": 8443,
        "username": "root",
        "has_password": True,
        "insecure_tls": True,
        "options": {"system": "1", "power_timeout": 300},
    }
    bmc = driver_bmc(live, "m1")
    assert (bmc.port, bmc.insecure_tls, dict(bmc.options)) == (8443, True, {"system": "1"})
    assert (bmc.username, bmc.password) == ("root", "calvin")
    bad = apply(api, doc.replace('system: "1"', "colour: red"))
    assert bad.status_code == 422
    assert bad.json()["detail"]["field"] == "documents[0].spec.bmc.options.colour"


def test_a_new_login_waits_while_a_machine_using_it_provisions(
    live: LiveServer, api: httpx.Client
) -> None:
    workflow = (
        "apiVersion: metalflow/v1\nkind: Workflow\nmetadata: {name: hw1-install}\n"
        "spec: {template: ubuntu, machine: hw1}\n"
    )
    results(apply(api, stream(secret(), rufio_machine(), hardware(), simple_template(), workflow)))
    assert api.get("/api/v1/machines/hw1").json()["state"] == "provisioning"
    response = apply(api, secret(NEW_PASSWORD))
    assert response.status_code == 409
    assert_no_secret(response.text)
    assert "machine hw1 is provisioning" in response.json()["detail"]["message"]
    assert login_of(live, "hw1") == ("admin", PASSWORD, "192.0.2.200")


def test_ipmitool_and_rpc_machines_become_ipmi_and_webhook_bmcs(
    live: LiveServer, api: httpx.Client
) -> None:
    docs = [
        secret(),
        f"""\
apiVersion: v1
kind: Secret
metadata: {{name: rpc-hmac, namespace: lab}}
data: {{secret: {b64("superSecret1")}}}
""",
        """\
apiVersion: bmc.tinkerbell.org/v1alpha1
kind: Machine
metadata: {name: bmc1, namespace: lab}
spec:
  connection:
    host: 192.0.2.201
    authSecretRef: {name: bmc1-auth, namespace: lab}
    insecureTLS: true
    providerOptions: {ipmitool: {cipherSuite: "17"}}
""",
        """\
apiVersion: bmc.tinkerbell.org/v1alpha1
kind: Machine
metadata: {name: bmc2, namespace: lab}
spec:
  connection:
    host: 192.0.2.202
    insecureTLS: false
    providerOptions:
      rpc:
        consumerURL: https://pdu-bridge.example/rpc
        hmac: {secrets: {sha256: [{name: rpc-hmac}]}}
""",
        hardware(),
        hardware("hw2", "52:54:00:aa:bb:02", bmc="bmc2"),
    ]
    response = apply(api, stream(*docs))
    assert "superSecret1" not in response.text and b64("superSecret1") not in response.text
    assert [r[2] for r in results(response)] == ["created"] * 6
    ipmi = driver_bmc(live, "hw1")
    assert (ipmi.driver, ipmi.host, ipmi.port, ipmi.insecure_tls) == (
        "ipmi",
        "192.0.2.201",
        623,
        False,
    )
    assert (ipmi.username, ipmi.password, dict(ipmi.options)) == (
        "admin",
        PASSWORD,
        {"cipher_suite": "17"},
    )
    webhook = driver_bmc(live, "hw2")
    assert (webhook.driver, webhook.username, webhook.password) == ("webhook", None, "superSecret1")
    assert dict(webhook.options) == {"url": "https://pdu-bridge.example/rpc"}
    shown = api.get("/api/v1/machines/hw2")
    assert "superSecret1" not in shown.text
    assert shown.json()["bmc"]["has_password"] is True
