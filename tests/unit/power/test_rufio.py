"""rufio's BMC objects and metalflow's own spec.bmc as `apply` parses them: the driver each
rufio Machine gets, what a Secret holds, and errors naming the field (never a secret)."""

from __future__ import annotations

import base64
import textwrap

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from metalflow.apply.documents import BmcMachineDoc, MachineDoc, SecretDoc, parse
from metalflow.errors import Invalid
from metalflow.power import declared
from metalflow.power.rufio import Login, ObjectRef, RufioMachine
from metalflow.power.service import bmc_from


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def rufio_machine(connection: str, *, name: str = "bmc1", namespace: str = "lab") -> str:
    return (
        "apiVersion: bmc.tinkerbell.org/v1alpha1\nkind: Machine\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\n"
        "spec:\n  connection:\n" + textwrap.indent(textwrap.dedent(connection), "    ")
    )


AUTH = "authSecretRef: {name: bmc1-auth, namespace: lab}\n"


def secret(body: str, *, name: str = "bmc1-auth") -> str:
    return f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: lab}}\n{body}"


def hardware(bmc_ref: str) -> str:
    return (
        "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\n"
        "metadata: {name: hw1, namespace: lab}\n"
        f"spec:\n  bmcRef: {bmc_ref}\n"
        '  interfaces: [{dhcp: {mac: "52:54:00:aa:bb:01"}}]\n'
    )


def only_rufio(text: str) -> RufioMachine:
    [doc] = parse(text)
    assert isinstance(doc, BmcMachineDoc)
    return doc.machine


def error_of(text: str) -> Invalid:
    with pytest.raises(Invalid) as info:
        parse(text)
    return info.value


# --- which driver a rufio Machine gets ------------------------------------------------------


def test_redfish_options_give_the_redfish_driver_with_its_port_and_system() -> None:
    machine = only_rufio(
        rufio_machine(
            """\
            host: 192.0.2.200
            port: 623
            authSecretRef: {name: bmc1-auth, namespace: lab}
            insecureTLS: true
            providerOptions:
              redfish: {port: 8443, systemName: System.Embedded.1, useBasicAuth: true}
            """
        )
    )
    assert machine.ref == ObjectRef("lab", "bmc1")
    assert (machine.driver, machine.host, machine.port) == ("redfish", "192.0.2.200", 8443)
    assert machine.insecure_tls is True
    assert machine.options == {"system": "System.Embedded.1"}
    assert machine.secret == ObjectRef("lab", "bmc1-auth")


@pytest.mark.parametrize("first", ["gofish", "redfish", "Gofish"])
def test_preferred_order_starting_with_gofish_or_redfish_is_redfish(first: str) -> None:
    machine = only_rufio(
        rufio_machine(
            f"host: bmc1.lab\n{AUTH}insecureTLS: false\n"
            f"providerOptions: {{preferredOrder: [{first}, ipmitool]}}\n"
        )
    )
    assert (machine.driver, machine.port, machine.options) == ("redfish", None, {})


def test_ipmitool_gives_ipmi_with_the_cipher_suite_and_the_connection_port() -> None:
    machine = only_rufio(
        rufio_machine(
            f"host: 192.0.2.201\nport: 6230\n{AUTH}insecureTLS: true\n"
            "providerOptions: {ipmitool: {cipherSuite: 17}}\n"
        )
    )
    assert (machine.driver, machine.port) == ("ipmi", 6230)
    assert machine.options == {"cipher_suite": "17"}
    assert machine.insecure_tls is False  # IPMI has no TLS to be insecure about


def test_ipmitool_port_wins_over_the_connection_port() -> None:
    machine = only_rufio(
        rufio_machine(
            f"host: 192.0.2.201\nport: 6230\n{AUTH}insecureTLS: false\n"
            "providerOptions: {ipmitool: {port: 1623}}\n"
        )
    )
    assert machine.port == 1623


def test_no_provider_options_is_ipmi_on_623() -> None:
    machine = only_rufio(rufio_machine(f"host: 192.0.2.202\n{AUTH}insecureTLS: false\n"))
    assert (machine.driver, machine.port, machine.options) == ("ipmi", 623, {})


def test_rpc_is_the_webhook_driver_signing_with_the_first_sha256_secret() -> None:
    machine = only_rufio(
        rufio_machine(
            """\
            host: 192.0.2.203
            insecureTLS: true
            providerOptions:
              rpc:
                consumerURL: https://example.com/rpc
                hmac:
                  secrets:
                    sha512: [{name: secret9, namespace: default}]
                    sha256: [{name: secret1, namespace: default}, {name: secret2}]
            """
        )
    )
    assert machine.driver == "webhook"
    assert machine.options == {"url": "https://example.com/rpc"}
    assert machine.secret == ObjectRef("default", "secret1") and machine.port is None
    bmc = machine.bmc(Login("ignored", "ignored", "superSecret1"))
    assert bmc.username is None
    assert bmc.password is not None and bmc.password.get_secret_value() == "superSecret1"


def test_preferred_order_skips_providers_metalflow_does_not_drive() -> None:
    machine = only_rufio(
        rufio_machine(
            f"host: h\n{AUTH}insecureTLS: false\n"
            "providerOptions: {preferredOrder: [asrockrack, ipmitool, gofish]}\n"
        )
    )
    assert machine.driver == "ipmi"


def test_secret_namespace_defaults_to_the_machines_and_namespace_to_default() -> None:
    text = (
        "apiVersion: bmc.tinkerbell.org/v1alpha1\nkind: Machine\nmetadata: {name: bmc9}\n"
        "spec: {connection: {host: h, insecureTLS: false, authSecretRef: {name: s}}}\n"
    )
    machine = only_rufio(text)
    assert machine.ref == ObjectRef("default", "bmc9")
    assert machine.secret == ObjectRef("default", "s")


def test_stored_fields_give_the_same_machine_back() -> None:
    machine = only_rufio(
        rufio_machine(
            f"host: h\n{AUTH}insecureTLS: true\n"
            "providerOptions: {redfish: {port: 443, systemName: '1'}}\n"
        )
    )
    assert RufioMachine.from_stored(machine.ref, machine.stored()) == machine
    bmc = machine.bmc(Login("admin", "pw"))
    assert (bmc.driver, bmc.address, bmc.port, bmc.username) == ("redfish", "h", 443, "admin")
    assert bmc.password is not None and bmc.password.get_secret_value() == "pw"


@pytest.mark.parametrize(
    ("connection", "field", "words"),
    [
        (f"{AUTH}insecureTLS: true\n", "documents[0].spec.connection.host", "is required"),
        (
            f"host: h\n{AUTH}insecureTLS: true\n"
            "providerOptions: {preferredOrder: [asrockrack]}\n",
            "documents[0].spec.connection.providerOptions.preferredOrder",
            "names no provider metalflow drives",
        ),
        (
            f"host: h\n{AUTH}insecureTLS: true\nproviderOptions: {{intelAMT: {{port: 16992}}}}\n",
            "documents[0].spec.connection.providerOptions.intelAMT",
            "no Intel AMT driver",
        ),
        (
            f"host: h\n{AUTH}insecureTLS: true\nproviderOptions: {{preferredOrder: [rpc]}}\n",
            "documents[0].spec.connection.providerOptions.rpc.consumerURL",
            "is required",
        ),
        (
            "host: h\ninsecureTLS: true\nproviderOptions: {redfish: {port: 443}}\n",
            "documents[0].spec.connection.authSecretRef",
            "required for the redfish driver",
        ),
        (
            "host: h\ninsecureTLS: true\nproviderOptions: {rpc: {consumerURL: 'https://r/'}}\n",
            "documents[0].spec.connection.providerOptions.rpc.hmac.secrets",
            "signs every request",
        ),
        (
            f"host: h\n{AUTH}insecureTLS: true\nport: 70000\n",
            "documents[0].spec.connection.port",
            "TCP port",
        ),
        (
            f"host: h\n{AUTH}insecureTLS: yes please\n",
            "documents[0].spec.connection.insecureTLS",
            "true or false",
        ),
        (
            f"host: h\n{AUTH}insecureTLS: true\nproviderOptions: {{redfish: {{colour: red}}}}\n",
            "documents[0].spec.connection.providerOptions.redfish.colour",
            "unknown field 'colour'",
        ),
        (
            f"host: h\n{AUTH}insecureTLS: true\nwattage: 5\n",
            "documents[0].spec.connection.wattage",
            "unknown field",
        ),
    ],
)
def test_rufio_machine_errors_name_the_field(connection: str, field: str, words: str) -> None:
    error = error_of(rufio_machine(connection))
    assert error.field == field
    assert words in error.message


# --- Secrets ----------------------------------------------------------------------------------


def test_secret_data_is_base64_and_string_data_wins() -> None:
    [doc] = parse(
        secret(
            f"type: Opaque\ndata: {{username: {b64('admin')}, password: {b64('old')},"
            f" extra: {b64('kept out')}}}\nstringData: {{password: t0p-Secret}}\n"
        )
    )
    assert isinstance(doc, SecretDoc)
    assert doc.ref == ObjectRef("lab", "bmc1-auth")
    assert doc.login == Login("admin", "t0p-Secret", None)
    assert "t0p-Secret" not in repr(doc)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (
            "data: {username: YWRtaW4=, password: 'dDBw!LVNlY3JldA=='}\n",
            "documents[0].data.password",
            "not valid base64",
        ),
        (
            f"data: {{username: {b64('admin')}, password: {b64('t0p-Secret' + chr(10))}}}\n",
            "documents[0].data.password",
            "ends with a line break",
        ),
        ("data: {password: /w==}\n", "documents[0].data.password", "not UTF-8"),
        ("spec: {username: admin}\n", "documents[0].spec", "unknown field"),
        ("stringData: {password: [1, 2]}\n", "documents[0].stringData.password", "text"),
    ],
)
def test_secret_errors_name_the_key_never_the_value(body: str, field: str, words: str) -> None:
    error = error_of(secret(body))
    assert error.field == field
    assert words in error.message
    for value in ("dDBw", "t0p-Secret", "YWRtaW4="):
        assert value not in error.message


def test_a_repeated_rufio_object_is_refused() -> None:
    one = secret("stringData: {username: a, password: b}\n")
    error = error_of(one + "---\n" + one)
    assert error.field == "documents[1].metadata.name"
    assert "documents[0] and documents[1] are both Secret" in error.message


# --- a Hardware's bmcRef ----------------------------------------------------------------------


def test_bmc_ref_names_a_rufio_machine_in_the_hardwares_namespace() -> None:
    [doc] = parse(hardware("{apiGroup: bmc.tinkerbell.org, kind: Machine, name: bmc1}"))
    assert isinstance(doc, MachineDoc)
    assert doc.bmc_ref == ObjectRef("lab", "bmc1")
    assert doc.spec.bmc is None  # found when applied, from this stream or an earlier one


@pytest.mark.parametrize(
    ("ref", "field"),
    [
        ("{apiGroup: bmc.tinkerbell.org, kind: BaseboardManagement, name: b}", "kind"),
        ("{apiGroup: example.com, kind: Machine, name: b}", "apiGroup"),
        ("{apiGroup: bmc.tinkerbell.org, kind: Machine}", "name"),
    ],
)
def test_bad_bmc_ref_names_the_field(ref: str, field: str) -> None:
    assert error_of(hardware(ref)).field == f"documents[0].spec.bmcRef.{field}"


def test_rufio_objects_come_before_the_machines_that_name_them() -> None:
    stream = "---\n".join(
        [
            hardware("{apiGroup: bmc.tinkerbell.org, kind: Machine, name: bmc1}"),
            rufio_machine(f"host: h\n{AUTH}insecureTLS: false\n"),
            secret("stringData: {username: a, password: b}\n"),
        ]
    )
    assert [type(doc) for doc in parse(stream)] == [SecretDoc, BmcMachineDoc, MachineDoc]


# --- metalflow's own spec.bmc -----------------------------------------------------------------


def machine(bmc: str) -> str:
    return f"apiVersion: metalflow/v1\nkind: Machine\nmetadata: {{name: m1}}\nspec:\n  bmc: {bmc}\n"


def test_bmc_port_insecure_tls_and_options_are_stored_beside_each_other() -> None:
    [doc] = parse(
        machine(
            "{driver: redfish, address: 192.0.2.9, port: 8443, insecure_tls: true,"
            " options: {system: '1', power_timeout: 300}}"
        )
    )
    assert isinstance(doc, MachineDoc) and doc.spec.bmc is not None
    stored = doc.spec.bmc.stored_options()
    assert stored == {"port": 8443, "insecure_tls": True, "system": "1", "power_timeout": 300}
    driver_sees = bmc_from("redfish", "192.0.2.9", None, None, stored)
    assert (driver_sees.port, driver_sees.insecure_tls) == (8443, True)
    assert dict(driver_sees.options) == {"system": "1"}  # the power job's own stays out


@pytest.mark.parametrize(
    ("bmc", "field", "words"),
    [
        ("{driver: redfish, address: h, port: 0}", "documents[0].spec.bmc.port", "greater"),
        (
            "{driver: redfish, address: h, options: {port: 443}}",
            "documents[0].spec.bmc.options",
            "goes beside options",
        ),
        (
            "{driver: redfish, address: h, options: {colour: red}}",
            "documents[0].spec.bmc.options.colour",
            "unknown to the redfish driver",
        ),
        (
            "{driver: redfish, address: 'not a host!'}",
            "documents[0].spec.bmc.address",
            "is not a host name",
        ),
        (
            "{driver: redfish, address: h, options: {power_timeout: soon}}",
            "documents[0].spec.bmc.options.power_timeout",
            "not a number of seconds",
        ),
        (
            "{driver: redfish, address: h, password: hunter2}",
            "documents[0].spec.bmc.username",
            "required when a password is set",
        ),
    ],
)
def test_bmc_errors_name_the_field(bmc: str, field: str, words: str) -> None:
    error = error_of(machine(bmc))
    assert error.field == field
    assert words in error.message
    assert "hunter2" not in error.message


def test_a_driver_missing_from_this_build_is_checked_by_its_first_power_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(name: str) -> None:
        raise ModuleNotFoundError(f"No module named 'metalflow.power.{name}'")

    monkeypatch.setattr(declared, "driver_class", missing)
    [doc] = parse(machine("{driver: redfish, address: h, options: {colour: red}}"))
    assert isinstance(doc, MachineDoc) and doc.spec.bmc is not None
    assert doc.spec.bmc.options == {"colour": "red"}


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)


def _maybe(keys: list[str]) -> st.SearchStrategy[dict[str, object]]:
    return st.dictionaries(st.sampled_from(keys), _VALUES, max_size=len(keys))


@given(
    _maybe(["host", "port", "insecureTLS", "authSecretRef"]),
    _maybe(["preferredOrder", "redfish", "ipmitool", "rpc", "intelAMT"]),
    _maybe(["username", "password", "secret", "other"]),
)
def test_any_rufio_shaped_input_is_parsed_or_refused_with_a_field(
    connection: dict[str, object], providers: dict[str, object], data: dict[str, object]
) -> None:
    docs = [
        {
            "apiVersion": "bmc.tinkerbell.org/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": "bmc1"},
            "spec": {"connection": {**connection, "providerOptions": providers}},
        },
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": data},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"}, "stringData": data},
    ]
    for doc in docs:
        try:
            parse(yaml.safe_dump(doc))
        except Invalid as exc:
            assert exc.field and exc.field.startswith("documents[0]")
