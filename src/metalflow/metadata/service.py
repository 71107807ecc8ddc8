"""What the metadata service answers, apart from how the request arrived: the metadata port's
own HTTP server (metadata/wire.py) and the API port (`--metadata-on-api-port`, through the
ASGI gate in metadata/router.py) both hand a `MetadataRequest` here and write out the `Answer`.

Who is asking is the request's source address, matched against every address of every machine
in the in-memory boot index (`X-Forwarded-For` only from `--metadata-trusted-proxy` networks),
or the secret in `/instances/TOKEN/...`; an unknown caller gets a 404, a log line with the
reason and an event. One machine can never read another's metadata: nothing else in a request
names the machine.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml
from anyio import to_thread

from metalflow.errors import MetalflowError
from metalflow.index.instance import Instance
from metalflow.index.views import MachineView
from metalflow.inventory import service as inventory
from metalflow.metadata import ec2, equinix
from metalflow.metadata.netconfig import network_config
from metalflow.recorder import UNKNOWN_CALLERS
from metalflow.services import Services
from metalflow.urls import base_url

log = logging.getLogger("metalflow.metadata")

METADATA_PREFIXES = (
    *(f"/{version}" for version in ec2.VERSIONS),
    "/metadata",
    "/userdata",
    "/nocloud",
    "/phone-home",
    "/events",
    "/instances",
)
TREE_CACHE_SLACK = 1_000
"""Trees of deleted machines are dropped once the cache outgrows the index by this much."""
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
MAX_TOKEN_TTL = 21600
MAX_POST_BODY = 64 * 1024
KEPT_POST_BODY = 4096
"""How much of a phone-home or user-state body the event keeps."""
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
OCTETS = "application/octet-stream"
UNKNOWN = "no machine in inventory has the address this request comes from (or the token)"
NOCLOUD_FILES = ("meta-data", "user-data", "vendor-data", "network-config")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_metadata_path(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in METADATA_PREFIXES)


@dataclass(slots=True)
class MetadataRequest:
    method: str
    path: str
    """Percent-decoded, without the query."""
    peer: str | None
    host: str | None = None
    forwarded_for: str | None = None
    token_ttl: str | None = None
    body: bytes = b""
    scheme: str = "http"
    local: str | None = None
    """HOST:PORT the request arrived at, for a request without a Host header."""


@dataclass(slots=True)
class Answer:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    cacheable: bool = False
    """The same caller, path and Host get the same answer while the machine is unchanged."""
    caller: MachineView | None = field(default=None, repr=False)


def text(status: int, message: str, *headers: tuple[str, str]) -> Answer:
    return Answer(status, TEXT, f"{message}\n".encode(), headers)


@dataclass(slots=True)
class Caller:
    """The machine a request comes from, with what the index built for its OS."""

    view: MachineView
    instance: Instance
    tree: ec2.Directory


@dataclass(frozen=True, slots=True)
class Route:
    """A metadata path taken apart: the secret token if any, and the rest."""

    token: str | None
    rest: str


def route(path: str) -> Route:
    """`/instances/TOKEN/latest/meta-data/` → token and `/latest/meta-data/`."""
    if path.startswith("/instances/"):
        token, slash, rest = path[len("/instances/") :].partition("/")
        return Route(token, slash + rest)
    return Route(None, path)


def caller_address(
    peer: str | None, forwarded_for: str | None, trusted: list[Network]
) -> str | None:
    """The address the request is from: the peer, or the last untrusted hop of
    X-Forwarded-For when the peer is a trusted proxy; None when there is no usable one."""
    if peer is None:
        return None
    try:
        address = _unmapped(ipaddress.ip_address(peer))
    except ValueError:
        return None
    if forwarded_for is None or not _within(address, trusted):
        return str(address)
    for hop in reversed(forwarded_for.split(",")):
        try:
            address = _unmapped(ipaddress.ip_address(hop.strip()))
        except ValueError:
            return None
        if not _within(address, trusted):
            return str(address)
    return None


def _within(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: list[Network]
) -> bool:
    return any(address in network for network in networks)


def _unmapped(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """::ffff:192.0.2.11 (a dual-stack socket's view of an IPv4 peer) is 192.0.2.11."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def shown_path(path: str) -> str:
    """The path with an instance token blanked: it is a secret, not for logs or events."""
    found = route(path)
    return f"/instances/TOKEN{found.rest}" if found.token is not None else path


def api_url(services: Services, host: str | None) -> str:
    """The API's URL as this caller reaches the server: the Host it sent, at the API port."""
    name = urllib.parse.urlsplit(f"//{host}").hostname if host else None
    if name is None:
        return base_url(services.settings, host)
    name = f"[{name}]" if ":" in name else name
    return base_url(services.settings, f"{name}:{services.settings.http_port}")


class MetadataService:
    """Answers from the boot index; writes only events and, on phone-home, the machine state."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.trusted = services.settings.metadata_trusted_networks
        self._trees: dict[str, tuple[MachineView, ec2.Directory]] = {}

    def _tree(self, view: MachineView, instance: Instance) -> ec2.Directory:
        """The instance's EC2 tree, built once per version of the machine's view (the index
        replaces a view whole when the machine changes) rather than per request."""
        cached = self._trees.get(view.id)
        if cached is not None and cached[0] is view:
            return cached[1]
        if len(self._trees) > 2 * len(self.services.index) + TREE_CACHE_SLACK:
            self._trees.clear()
        built = ec2.tree(instance)
        self._trees[view.id] = (view, built)
        return built

    def caller(self, request: MetadataRequest, token: str | None) -> Caller | None:
        address = caller_address(request.peer, request.forwarded_for, self.trusted)
        if token is not None:
            view = self._by_token(token)
            reason = "the instance token is not (or no longer) valid"
        else:
            view = self.services.index.by_address(address) if address is not None else None
            reason = "no machine has this address" if address is not None else "no usable address"
        if view is not None and view.instance is not None:
            return Caller(view, view.instance, self._tree(view, view.instance))
        path = shown_path(request.path)
        log.info(
            "event=metadata.unknown_caller peer=%s address=%s path=%s reason=%s",
            request.peer,
            address,
            path,
            reason,
        )
        self.services.boot_events.record(
            "metadata.unknown_caller",
            None,
            UNKNOWN_CALLERS,
            address=address,
            path=path[:200],
            reason=reason,
        )
        return None

    def _by_token(self, token: str) -> MachineView | None:
        parsed = self.services.keyring.parse_metadata_token(token)
        if parsed is None:
            return None
        view = self.services.index.by_id(parsed[0])
        if view is None or view.agent_token_generation != parsed[1]:
            return None
        return view

    def answer(self, request: MetadataRequest) -> Answer:
        """Every request but the POSTs, which `post` answers."""
        found = route(request.path)
        if request.method == "PUT":
            if found.rest == "/latest/api/token":
                return _imds_token(request.token_ttl)
            return text(405, "method not allowed", ("Allow", "GET, HEAD"))
        if request.method == "POST":
            return text(405, "use POST only for /phone-home and /events", ("Allow", "GET, HEAD"))
        if request.method not in ("GET", "HEAD"):
            return text(405, "method not allowed", ("Allow", "GET, HEAD"))
        rest = found.rest
        version, _, below = rest[1:].partition("/")
        if version in ec2.VERSIONS:
            return self._known(request, found.token, lambda caller: _ec2(caller, below))
        if rest == "/metadata":
            return self._known(
                request, found.token, lambda caller: self._equinix(caller, request, found.token)
            )
        if rest == "/userdata":
            return self._known(request, found.token, _userdata)
        if version == "nocloud" and below in NOCLOUD_FILES:
            return self._known(request, found.token, lambda caller: _nocloud(caller, below))
        if rest in ("/phone-home", "/events"):
            return text(405, "POST here", ("Allow", "POST"))
        return text(404, f"{shown_path(request.path)}: not found")

    def _known(
        self,
        request: MetadataRequest,
        token: str | None,
        build: Callable[[Caller], Answer],
    ) -> Answer:
        found = self.caller(request, token)
        if found is None:
            return text(404, UNKNOWN)
        answer = build(found)
        answer.caller = found.view
        return answer

    def _equinix(self, found: Caller, request: MetadataRequest, token: str | None) -> Answer:
        try:
            api = api_url(self.services, request.host)
        except MetalflowError as exc:
            return text(400, str(exc))
        own = f"{request.scheme}://{request.host or request.local}"
        if token is not None:
            own = f"{own}/instances/{token}"
        urls = equinix.Urls(api=api, phone_home=f"{own}/phone-home", user_state=f"{own}/events")
        body = json.dumps(equinix.document(found.instance, urls), separators=(",", ":"))
        return Answer(200, JSON, body.encode(), cacheable=True)

    def post_route(self, request: MetadataRequest) -> str | None:
        """The event kind a POST records, or None when the path takes no POST."""
        rest = route(request.path).rest
        if rest == "/phone-home":
            return "metadata.phone_home"
        if rest == "/events":
            return "metadata.user_state"
        return None

    async def post(self, request: MetadataRequest) -> Answer:
        """The installed OS is up: an event on the machine (cloud-init's phone_home module posts
        a form; the Equinix user_state_url gets JSON; both are kept, bounded, in the event)."""
        kind = self.post_route(request)
        if kind is None:
            return self.answer(request)
        found = self.caller(request, route(request.path).token)
        if found is None:
            return text(404, UNKNOWN)
        view = found.view
        body = request.body[:KEPT_POST_BODY].decode(errors="replace")
        self.services.boot_events.record(kind, view, kind, body=body)
        log.info("event=%s machine=%s", kind, view.name)
        if kind == "metadata.phone_home":
            address = caller_address(request.peer, request.forwarded_for, self.trusted)
            await to_thread.run_sync(self._mark_booted, view.id, f"phoned home from {address}")
        return Answer(204, TEXT, b"")

    def _mark_booted(self, machine_id: str, reason: str) -> None:
        """The queued phone-home event joins this transaction (the boot event recorder takes a
        machine's queued events into any transaction about it), so it is listed, by id and by
        time, before the `active` it causes."""
        with self.services.db.write() as session:
            inventory.mark_booted(session, machine_id, reason)


def _imds_token(ttl: str | None) -> Answer:
    """IMDSv2: a session token, accepted (not required) on every later request."""
    if ttl is None or not ttl.isdigit() or not 1 <= int(ttl) <= MAX_TOKEN_TTL:
        return text(400, f"{TOKEN_TTL_HEADER} must be 1..{MAX_TOKEN_TTL}")
    return Answer(200, TEXT, secrets.token_urlsafe(32).encode(), ((TOKEN_TTL_HEADER, ttl),))


def _ec2(found: Caller, path: str) -> Answer:
    body = ec2.lookup(found.tree, path)
    if body is None:
        return text(404, f"{path or '/'}: not found")
    media = OCTETS if path.strip("/") == "user-data" else TEXT
    return Answer(200, media, body, cacheable=True)


def _userdata(found: Caller) -> Answer:
    instance = found.instance
    if instance.user_data is None:
        return text(404, "this machine has no user-data")
    return Answer(200, OCTETS, instance.user_data, cacheable=True)


def _nocloud(found: Caller, name: str) -> Answer:
    """NoCloud's files (`ds=nocloud-net;s=http://HOST:50061/nocloud/`), and the network config
    a writefile action can drop into a cidata partition."""
    instance = found.instance
    if name == "meta-data":
        meta = {"instance-id": instance.id, "local-hostname": instance.hostname}
        return Answer(200, TEXT, yaml.safe_dump(meta, sort_keys=False).encode(), cacheable=True)
    if name == "user-data":
        return Answer(200, OCTETS, instance.user_data or b"", cacheable=True)
    if name == "vendor-data":
        return Answer(200, TEXT, b"", cacheable=True)
    config = yaml.safe_dump(network_config(instance), sort_keys=False)
    return Answer(200, TEXT, config.encode(), cacheable=True)
