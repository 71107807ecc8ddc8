"""Tinkerbell's rufio objects, accepted unmodified: a `bmc.tinkerbell.org/v1alpha1` Machine (one
BMC: host, port, login Secret, provider options) and the `v1` Secret with its login, named by a
Hardware's `spec.bmcRef`. Pure: parsing, and the `spec.bmc` a Hardware gets from the two.

rufio (through bmclib) tries several providers on one BMC; metalflow drives a BMC with one
driver, chosen in this order: the first provider in `providerOptions.preferredOrder` that
metalflow drives (gofish or redfish → redfish, ipmitool → ipmi, rpc → webhook); else `rpc`
options → webhook; else `redfish` options → redfish; else ipmi, whose port the connection's
`port` (623 unless set) is. Carried over: redfish `port` and `systemName` (→ options.system),
ipmitool `port` and `cipherSuite` (→ options.cipher_suite), rpc `consumerURL` (→ options.url)
and its first HMAC Secret (sha256's, else the first listed; its `secret` key signs the webhook
driver's requests). redfish `useBasicAuth` needs nothing (the driver falls back to HTTP Basic by
itself); the other rpc settings (request, signature, experimental) are accepted and not used:
the webhook driver speaks its own request format, not bmclib's.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from metalflow.errors import Invalid
from metalflow.inventory.schemas import BmcSpec
from metalflow.inventory.tinkerbell import check_keys
from metalflow.names import check_name

RUFIO_API = "bmc.tinkerbell.org/v1alpha1"
RUFIO_GROUP = "bmc.tinkerbell.org"
SECRET_API = "v1"
DEFAULT_NAMESPACE = "default"
IPMI_PORT = 623
LOGIN_KEYS = ("username", "password")
HMAC_KEYS = ("secret",)
SECRET_VALUE_KEYS = LOGIN_KEYS + HMAC_KEYS
"""The keys of a Secret that metalflow keeps (encrypted); any others are not stored."""

SECRET_KEYS = frozenset(
    {"apiVersion", "kind", "metadata", "data", "stringData", "type", "immutable"}
)
SPEC_KEYS = frozenset({"connection"})
CONNECTION_KEYS = frozenset({"host", "port", "authSecretRef", "insecureTLS", "providerOptions"})
SECRET_REF_KEYS = frozenset({"name", "namespace"})
PROVIDER_KEYS = frozenset({"preferredOrder", "redfish", "ipmitool", "intelAMT", "rpc"})
REDFISH_KEYS = frozenset({"port", "useBasicAuth", "systemName"})
IPMITOOL_KEYS = frozenset({"port", "cipherSuite"})
RPC_KEYS = frozenset(
    {"consumerURL", "logNotificationsDisabled", "request", "signature", "hmac", "experimental"}
)
RPC_HMAC_KEYS = frozenset({"prefixSigDisabled", "secrets"})
BMC_REF_KEYS = frozenset({"apiGroup", "kind", "name"})
PROVIDERS = {"gofish": "redfish", "redfish": "redfish", "ipmitool": "ipmi", "rpc": "webhook"}
"""bmclib provider names (lower case) → the metalflow driver that speaks the same protocol."""


@dataclass(frozen=True)
class ObjectRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Login:
    """What metalflow keeps of a Secret: `username` and `password` (a BMC login), `secret` (an
    rpc HMAC key). Never logged: the repr hides them."""

    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)

    def missing(self, keys: tuple[str, ...]) -> list[str]:
        return [key for key in keys if not getattr(self, key)]


@dataclass(frozen=True)
class RufioMachine:
    """A rufio Machine in metalflow's BMC words; its login is still to be found."""

    ref: ObjectRef
    driver: str
    host: str
    port: int | None
    insecure_tls: bool
    options: dict[str, str | int | float | bool]
    secret: ObjectRef | None
    origin: dict[str, str] = field(default_factory=dict, compare=False)
    """`spec.bmc` field → the path in the document that set it, for errors."""

    @property
    def secret_keys(self) -> tuple[str, ...]:
        """What its Secret must hold: the HMAC key for rpc, else the BMC login."""
        return HMAC_KEYS if self.driver == "webhook" else LOGIN_KEYS

    def stored(self) -> dict[str, Any]:
        """The `bmc_objects.fields` of this Machine."""
        return {
            "driver": self.driver,
            "host": self.host,
            "port": self.port,
            "insecure_tls": self.insecure_tls,
            "options": self.options,
            "secret": None
            if self.secret is None
            else {"namespace": self.secret.namespace, "name": self.secret.name},
        }

    @classmethod
    def from_stored(cls, ref: ObjectRef, fields: dict[str, Any]) -> RufioMachine:
        secret = fields.get("secret")
        return cls(
            ref=ref,
            driver=str(fields["driver"]),
            host=str(fields["host"]),
            port=fields.get("port"),
            insecure_tls=bool(fields.get("insecure_tls")),
            options=dict(fields.get("options") or {}),
            secret=ObjectRef(secret["namespace"], secret["name"]) if secret else None,
        )

    def bmc(self, login: Login | None) -> BmcSpec:
        """The `spec.bmc` of every Hardware whose bmcRef names this Machine (the webhook
        driver's password is the key it signs with)."""
        webhook = self.driver == "webhook"
        password = (login.secret if webhook else login.password) if login else None
        return BmcSpec.model_validate(
            {
                "driver": self.driver,
                "address": self.host,
                "port": self.port,
                "username": login.username if login and not webhook else None,
                "password": password,
                "insecure_tls": self.insecure_tls,
                "options": self.options,
            }
        )


def _port(value: Any, where: str) -> int | None:
    """A TCP port; 0 or absent is unset, as in rufio."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 65536:
        raise Invalid(f"{where} must be a TCP port (1-65535), got {value!r}", field=where)
    return value or None


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{where} must be true or false, got {value!r}", field=where)
    return value


def _text(value: Any, where: str, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise Invalid(f"{where} is required", field=where)
        return None
    if not isinstance(value, str):
        raise Invalid(f"{where} must be a string", field=where)
    return value


def namespace_of(metadata: dict[str, Any], where: str) -> str:
    namespace = metadata.get("namespace")
    if namespace is None:
        return DEFAULT_NAMESPACE
    if not isinstance(namespace, str):
        at = f"{where}.metadata.namespace"
        raise Invalid(f"{at} must be a name, got {namespace!r}", field=at)
    return check_name(namespace, f"{where}.metadata.namespace")


def _driver(providers: dict[str, Any], where: str) -> tuple[str, str]:
    """The metalflow driver for these providerOptions, and the path that chose it."""
    order = providers.get("preferredOrder")
    if order is not None:
        if not isinstance(order, list) or not all(isinstance(item, str) for item in order):
            raise Invalid(f"{where}.preferredOrder must be a list of provider names", field=where)
        for index, item in enumerate(order):
            if item.lower() in PROVIDERS:
                return PROVIDERS[item.lower()], f"{where}.preferredOrder[{index}]"
        if order:
            raise Invalid(
                f"{where}.preferredOrder names no provider metalflow drives; put one of"
                f" {', '.join(PROVIDERS)} in it",
                field=f"{where}.preferredOrder",
            )
    for key, driver in (("rpc", "webhook"), ("redfish", "redfish"), ("ipmitool", "ipmi")):
        if providers.get(key) is not None:
            return driver, f"{where}.{key}"
    if providers.get("intelAMT") is not None:
        raise Invalid(
            f"{where}.intelAMT: metalflow has no Intel AMT driver; use the BMC's redfish or"
            " ipmitool provider instead",
            field=f"{where}.intelAMT",
        )
    return "ipmi", where


def parse_machine(ref: ObjectRef, spec: Any, where: str) -> RufioMachine:
    """A rufio Machine's spec; `where` is the document (documents[N])."""
    spec = check_keys(spec, SPEC_KEYS, f"{where}.spec")
    at = f"{where}.spec.connection"
    if not isinstance(spec.get("connection"), dict):
        raise Invalid(f"{at} is required: host, authSecretRef, providerOptions", field=at)
    connection = check_keys(spec["connection"], CONNECTION_KEYS, at)
    host = _text(connection.get("host"), f"{at}.host", required=True) or ""
    connection_port = _port(connection.get("port"), f"{at}.port")
    insecure_tls = _bool(connection.get("insecureTLS", False), f"{at}.insecureTLS")
    providers_at = f"{at}.providerOptions"
    providers = check_keys(connection.get("providerOptions"), PROVIDER_KEYS, providers_at)
    driver, chosen_at = _driver(providers, providers_at)
    origin = {"": at, "address": f"{at}.host", "insecure_tls": f"{at}.insecureTLS"}
    options: dict[str, str | int | float | bool] = {}
    port: int | None = None
    if driver == "redfish":
        redfish_at = f"{providers_at}.redfish"
        redfish = check_keys(providers.get("redfish"), REDFISH_KEYS, redfish_at)
        port = _port(redfish.get("port"), f"{redfish_at}.port")
        if "useBasicAuth" in redfish:
            _bool(redfish["useBasicAuth"], f"{redfish_at}.useBasicAuth")
        system = _text(redfish.get("systemName"), f"{redfish_at}.systemName")
        if system is not None:
            options["system"] = system
        origin |= {"port": f"{redfish_at}.port", "options.system": f"{redfish_at}.systemName"}
    elif driver == "ipmi":
        ipmi_at = f"{providers_at}.ipmitool"
        ipmi = check_keys(providers.get("ipmitool"), IPMITOOL_KEYS, ipmi_at)
        port = _port(ipmi.get("port"), f"{ipmi_at}.port")
        origin["port"] = f"{ipmi_at}.port" if port is not None else f"{at}.port"
        port = port or connection_port or IPMI_PORT
        cipher = ipmi.get("cipherSuite")
        if isinstance(cipher, int) and not isinstance(cipher, bool):
            cipher = str(cipher)  # YAML reads `cipherSuite: 17` as a number; rufio's is text
        cipher = _text(cipher, f"{ipmi_at}.cipherSuite")
        if cipher is not None:
            options["cipher_suite"] = cipher
        origin["options.cipher_suite"] = f"{ipmi_at}.cipherSuite"
        insecure_tls = False  # IPMI has no TLS; rufio requires the field all the same
    else:
        rpc_at = f"{providers_at}.rpc"
        if providers.get("rpc") is None:
            raise Invalid(
                f"{chosen_at} is rpc, so {rpc_at}.consumerURL is required: the URL of the rpc"
                " consumer",
                field=f"{rpc_at}.consumerURL",
            )
        rpc = check_keys(providers["rpc"], RPC_KEYS, rpc_at)
        options["url"] = _text(rpc.get("consumerURL"), f"{rpc_at}.consumerURL", required=True) or ""
        origin["options.url"] = f"{rpc_at}.consumerURL"
        hmac_secret, secret_at = _hmac_secret(rpc.get("hmac"), ref.namespace, f"{rpc_at}.hmac")
        origin["password"] = secret_at
        return RufioMachine(ref, driver, host, None, insecure_tls, options, hmac_secret, origin)
    login = _secret_ref(connection.get("authSecretRef"), ref.namespace, f"{at}.authSecretRef")
    if login is None:
        raise Invalid(
            f"{at}.authSecretRef is required for the {driver} driver: name (and namespace) of"
            " the Secret with the BMC's username and password",
            field=f"{at}.authSecretRef",
        )
    origin |= {"username": f"{at}.authSecretRef", "password": f"{at}.authSecretRef"}
    return RufioMachine(ref, driver, host, port, insecure_tls, options, login, origin)


def _hmac_secret(value: Any, namespace: str, where: str) -> tuple[ObjectRef, str]:
    """The Secret whose `secret` key signs the requests: sha256's first, else the first listed
    (metalflow's webhook driver signs with HMAC-SHA256 whatever rufio's algorithm)."""
    hmac = check_keys(value, RPC_HMAC_KEYS, where)
    secrets = hmac.get("secrets") or {}
    if not isinstance(secrets, dict):
        raise Invalid(f"{where}.secrets must map an algorithm to Secrets", field=f"{where}.secrets")
    ordered = sorted(secrets, key=lambda algorithm: algorithm != "sha256")
    for algorithm in ordered:
        refs = secrets[algorithm]
        at = f"{where}.secrets.{algorithm}"
        if not isinstance(refs, list):
            raise Invalid(f"{at} must be a list of {{name, namespace}}", field=at)
        if refs:
            found = _secret_ref(refs[0], namespace, f"{at}[0]")
            if found is not None:
                return found, f"{at}[0]"
    raise Invalid(
        f"{where}.secrets: metalflow's webhook driver signs every request; name a Secret with a"
        " `secret` key, e.g. secrets: {sha256: [{name: rpc-hmac, namespace: NAMESPACE}]}",
        field=f"{where}.secrets",
    )


def _secret_ref(value: Any, namespace: str, where: str) -> ObjectRef | None:
    ref = check_keys(value, SECRET_REF_KEYS, where)
    name = _text(ref.get("name"), f"{where}.name")
    if name is None:
        return None
    own = _text(ref.get("namespace"), f"{where}.namespace")
    return ObjectRef(
        check_name(own, f"{where}.namespace") if own else namespace,
        check_name(name, f"{where}.name"),
    )


def _decoded(value: Any, where: str) -> str:
    """A Secret's `data` value: base64 of UTF-8 text (line breaks ignored, as Kubernetes does).
    The messages never show the value."""
    if not isinstance(value, str):
        raise Invalid(f"{where} must be base64 text", field=where)
    try:
        raw = base64.b64decode(value.replace("\n", "").replace("\r", ""), validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(
            f"{where} is not valid base64; encode it with `printf %s VALUE | base64`, or put the"
            " plain text in stringData instead",
            field=where,
        ) from None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise Invalid(f"{where} is not UTF-8 text once decoded", field=where) from None


def parse_secret(raw: dict[str, Any], where: str) -> Login:
    """A Secret's username, password and secret (`stringData` wins over `data`, as in
    Kubernetes); its other keys are checked and not kept."""
    unknown = sorted(set(raw) - SECRET_KEYS)
    if unknown:
        raise Invalid(f"{where}: unknown field {unknown[0]!r}", field=f"{where}.{unknown[0]}")
    data = raw.get("data") or {}
    strings = raw.get("stringData") or {}
    for key, value in (("data", data), ("stringData", strings)):
        if not isinstance(value, dict):
            raise Invalid(f"{where}.{key} must be a mapping", field=f"{where}.{key}")
    values = {str(key): _decoded(value, f"{where}.data.{key}") for key, value in data.items()}
    for key, value in strings.items():
        if not isinstance(value, str):
            at = f"{where}.stringData.{key}"
            raise Invalid(f"{at} must be text", field=at)
        values[str(key)] = value
    for key in SECRET_VALUE_KEYS:
        if values.get(key, "").endswith("\n"):
            at = f"{where}.{'stringData' if key in strings else 'data'}.{key}"
            raise Invalid(
                f"{at} ends with a line break (encoded with `echo` rather than `printf %s`, or"
                " written as a `|` block?); the BMC would refuse it",
                field=at,
            )
    return Login(*(values.get(key) or None for key in SECRET_VALUE_KEYS))


def parse_bmc_ref(spec: dict[str, Any], namespace: str, where: str) -> ObjectRef | None:
    """A Hardware's `spec.bmcRef`: the rufio Machine (in the Hardware's namespace) it names."""
    at = f"{where}.spec.bmcRef"
    ref = check_keys(spec.get("bmcRef"), BMC_REF_KEYS, at)
    if not ref:
        return None
    group, kind = ref.get("apiGroup"), ref.get("kind")
    if group not in (None, RUFIO_GROUP):
        raise Invalid(f"{at}.apiGroup must be {RUFIO_GROUP}, got {group!r}", field=f"{at}.apiGroup")
    if kind not in (None, "Machine"):
        raise Invalid(f"{at}.kind must be Machine (rufio's), got {kind!r}", field=f"{at}.kind")
    return ObjectRef(namespace, check_name(ref.get("name"), f"{at}.name"))
