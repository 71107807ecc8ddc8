"""Real cloud-init as the metadata client, run by the system python3: its EC2 crawler (crawl,
crawl_imdsv2), its whole EC2 datasource (ec2_datasource) and its network config parser and
renderers (render_network).

Debian's `cloud-init` package (22.4) installs its code for /usr/bin/python3 only, so a crawl runs
in a subprocess of that interpreter, optionally behind an argv wrapper (`ip netns exec NS`, to
crawl from a machine's source address), and reports back as JSON. The child calls
`cloudinit.sources.helpers.ec2.get_instance_userdata` and then `get_instance_metadata`, in
DataSourceEc2.crawl_metadata's order, each request with `retries=0` (cloud-init's default is 5,
with 1 s sleeps) and a timeout of REQUEST_TIMEOUT (default 5 s), so a failure costs one request.

What comes back, as tests/unit/metadata/test_cloudinit_client.py shows against a fake tree:
- `metadata`: the dict cloud-init built. Leaves go through its MetadataLeafDecoder: text as is,
  a list of lines if the body has a newline anywhere (a trailing one too), a dict if it looks
  like a JSON object, "" when empty. A `public-keys/` listing of `0=name` lines becomes
  `{"name": <decoded public-keys/0/openssh-key>}`. A single failed request anywhere in the walk
  (a listed entry answering 404, a 401, a refused connection) makes the whole dict `{}`; cloud-init
  logs why to stderr ("Failed fetching meta-data/ from url ...").
- `userdata`: the body as bytes (b"" for an empty 200). On a 404, and on any other failure,
  cloud-init 22.4 returns the str "" (its initial value, never None); that is `None` here. A 404
  is not retried and not logged as an error; other failures log "Failed fetching userdata".

ec2_datasource runs DataSourceEc2 as an installed OS does, with its waits and retries, so it
belongs in a lab namespace: cloud-init first resolves three made-up names through the system
resolver to detect DNS redirection, which cannot leave a namespace without a route out.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.prerequisites import needs_tool, unavailable

PYTHON = "/usr/bin/python3"
"""The interpreter Debian's cloud-init is installed for (not the venv's)."""

REQUEST_TIMEOUT = 5.0
"""Seconds per HTTP request inside cloud-init (its own default for the EC2 helpers)."""

CHILD_PROGRAM = r"""
import base64, json, logging, sys

from cloudinit import log, url_helper
from cloudinit.sources import DataSourceEc2 as ds
from cloudinit.sources.helpers import ec2

mode, base_url, api_version, request_timeout = sys.argv[1:]
log.setupBasicLogging(logging.DEBUG)
knobs = {"timeout": float(request_timeout), "retries": 0}
token = None
if mode == "imdsv2":
    # DataSourceEc2._refresh_api_token's PUT (there without a timeout), then _get_headers'
    # token header on every request.
    try:
        token = url_helper.readurl(
            "{}/{}".format(base_url, ds.API_TOKEN_ROUTE),
            headers={ds.AWS_TOKEN_REQ_HEADER: ds.AWS_TOKEN_TTL_SECONDS},
            headers_redact=ds.AWS_TOKEN_REDACT,
            request_method="PUT",
            **knobs,
        ).contents
    except url_helper.UrlError as error:
        logging.warning("Unable to get API token: %s", error)
    if token:
        knobs["headers_cb"] = lambda url: {ds.AWS_TOKEN_PUT_HEADER: token}
        knobs["headers_redact"] = ds.AWS_TOKEN_REDACT
userdata = ec2.get_instance_userdata(api_version, base_url, **knobs)
metadata = ec2.get_instance_metadata(api_version, base_url, **knobs)
report = {
    "metadata": metadata,
    "userdata": None if isinstance(userdata, str) else base64.b64encode(userdata).decode(),
    "token": token,
}
json.dump(report, sys.stdout, default=lambda value: value.decode("utf-8", "surrogateescape"))
"""
"""Run as `python3 -I -c CHILD_PROGRAM MODE BASE_URL API_VERSION REQUEST_TIMEOUT`; prints one
JSON object, bytes (undecodable leaves, the token) decoded as UTF-8 with surrogateescape."""

_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
"""requests (under cloud-init) honours these; a booting machine has none, so neither does the
child, whatever the test runner's environment says."""


@dataclass(frozen=True, slots=True)
class CrawlResult:
    metadata: dict[str, Any]
    userdata: bytes | None
    """None where cloud-init returned "" (404 or any failure); see the module docstring."""
    token: str | None
    """The IMDSv2 token the PUT returned (crawl_imdsv2 only; None if it failed, and cloud-init
    then crawls without one, as DataSourceEc2._get_headers does)."""
    stderr: str
    """cloud-init's DEBUG log: every request, its attempt count and failures (tokens redacted)."""
    returncode: int


class CrawlError(AssertionError):
    """The child printed no report (it crashed, or the wrapper failed before running it)."""


@functools.cache
def needs_cloudinit() -> str:
    """cloud-init's version under /usr/bin/python3, or unavailable() naming the Debian package."""
    python = needs_tool(PYTHON, "python3")
    probe = subprocess.run(
        [python, "-I", "-c", "from cloudinit import version; print(version.version_string())"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        unavailable(
            f"cloud-init is not importable by {python}: apt-get install cloud-init "
            "(scripts/test.sh does; then touch /etc/cloud/cloud-init.disabled)"
        )
    return probe.stdout.strip()


def crawl(
    base_url: str,
    *,
    wrap: Sequence[str] = (),
    api_version: str = "2009-04-04",
    timeout: float = 60,
) -> CrawlResult:
    """IMDSv1: what cloud-init's EC2 helpers read from `base_url` (e.g. http://169.254.169.254,
    no trailing slash), `timeout` bounding the whole subprocess."""
    return _run("imdsv1", base_url, wrap, api_version, timeout)


def crawl_imdsv2(
    base_url: str,
    *,
    wrap: Sequence[str] = (),
    api_version: str = "2009-04-04",
    timeout: float = 60,
) -> CrawlResult:
    """IMDSv2 as DataSourceEc2 does it: `PUT {base_url}/latest/api/token` with
    `X-aws-ec2-metadata-token-ttl-seconds: 21600`, then the crawl with `X-aws-ec2-metadata-token`
    on every request. DataSourceEc2 answers a 401 by dropping the token and retrying with a new
    one; with retries=0 here, a 401 fails the crawl instead."""
    return _run("imdsv2", base_url, wrap, api_version, timeout)


def _run(
    mode: str, base_url: str, wrap: Sequence[str], api_version: str, timeout: float
) -> CrawlResult:
    report, stderr, returncode = _child(
        [CHILD_PROGRAM, mode, base_url, api_version, str(REQUEST_TIMEOUT)],
        wrap,
        timeout,
        f"cloud-init crawl of {base_url}",
    )
    userdata = report["userdata"]
    return CrawlResult(
        metadata=report["metadata"],
        userdata=None if userdata is None else base64.b64decode(userdata),
        token=report["token"],
        stderr=stderr,
        returncode=returncode,
    )


DATASOURCE_PROGRAM = r"""
import base64, json, logging, sys, tempfile

from cloudinit import distros, helpers, log
from cloudinit.event import EventScope
from cloudinit.sources import DataSourceEc2 as ds

base_url, request_timeout, max_wait = sys.argv[1:]
log.setupBasicLogging(logging.DEBUG)
# What DMI would say on a bare-metal server: no cloud cloud-init knows (it reads DMI to tell).
ds.identify_platform = lambda: ds.CloudNames.UNKNOWN
with tempfile.TemporaryDirectory() as tmp:
    paths = helpers.Paths({"cloud_dir": tmp + "/cloud", "run_dir": tmp + "/run"})
    sys_cfg = {
        "datasource": {
            "Ec2": {
                "metadata_urls": [base_url],
                "strict_id": False,
                "timeout": int(float(request_timeout)),
                "max_wait": int(max_wait),
            }
        }
    }
    distro = distros.fetch("debian")("debian", {}, paths)
    source = ds.DataSourceEc2(sys_cfg, distro, paths)
    found = source.get_data()
    report = {"found": found, "cloud_name": source.cloud_name}
    if found:
        network = source.network_config  # first: on EC2-Classic it adds to the update events
        report.update(
            instance_id=source.get_instance_id(),
            hostname=source.get_hostname().hostname,
            fqdn=source.get_hostname(fqdn=True).hostname,
            public_keys=source.get_public_ssh_keys(),
            availability_zone=source.availability_zone,
            userdata=None
            if source.userdata_raw is None or isinstance(source.userdata_raw, str)
            else base64.b64encode(source.userdata_raw).decode(),
            metadata=source.metadata,
            network_config=network,
            network_events=sorted(
                event.value for event in source.default_update_events[EventScope.NETWORK]
            ),
        )
json.dump(report, sys.stdout, default=lambda value: value.decode("utf-8", "surrogateescape"))
"""
"""Run as `python3 -I -c DATASOURCE_PROGRAM BASE_URL REQUEST_TIMEOUT MAX_WAIT`: DataSourceEc2
with a temporary cloud and run dir, on a platform that is not AWS, printing one JSON object."""


@dataclass(frozen=True, slots=True)
class DatasourceResult:
    found: bool
    """What DataSourceEc2.get_data() returned: cloud-init would use this datasource."""
    cloud_name: str
    instance_id: str | None
    hostname: str | None
    fqdn: str | None
    """What cloud-init sets the hostname and /etc/hosts from: `local-hostname`, short and full."""
    public_keys: list[str]
    availability_zone: str | None
    userdata: bytes | None
    """userdata_raw: None when there is none (cloud-init keeps the str "" then)."""
    metadata: dict[str, Any]
    network_config: dict[str, Any] | None
    """The network config v2 the datasource built from `meta-data/network/`, MACs matched
    against the interfaces of the namespace it ran in."""
    network_events: list[str]
    """When cloud-init applies the network config again ("boot-new-instance", "boot", ...)."""
    stderr: str


def ec2_datasource(
    base_url: str, *, wrap: Sequence[str] = (), max_wait: int = 10, timeout: float = 90
) -> DatasourceResult:
    """cloud-init's whole DataSourceEc2 (`get_data()`, then its network config) against
    `base_url`, as configured by `datasource: {Ec2: {metadata_urls: [base_url], strict_id:
    false}}`. Nothing is written outside a temporary directory; `max_wait` bounds the wait for
    the service, `timeout` the subprocess."""
    report, stderr, _ = _child(
        [DATASOURCE_PROGRAM, base_url, str(REQUEST_TIMEOUT), str(max_wait)],
        wrap,
        timeout,
        f"cloud-init's DataSourceEc2 against {base_url}",
    )
    userdata = report.get("userdata")
    return DatasourceResult(
        found=report["found"],
        cloud_name=report["cloud_name"],
        instance_id=report.get("instance_id"),
        hostname=report.get("hostname"),
        fqdn=report.get("fqdn"),
        public_keys=report.get("public_keys", []),
        availability_zone=report.get("availability_zone"),
        userdata=None if userdata is None else base64.b64decode(userdata),
        metadata=report.get("metadata", {}),
        network_config=report.get("network_config"),
        network_events=report.get("network_events", []),
        stderr=stderr,
    )


RENDER_PROGRAM = r"""
import json, logging, os, sys, tempfile

from cloudinit import log, net, url_helper, util
from cloudinit.net import network_state, renderers

source, name, nics, request_timeout = sys.argv[1:]
log.setupBasicLogging(logging.DEBUG)
if nics != "-":
    seen = json.loads(nics)
    net.get_interfaces_by_mac_on_linux = lambda blacklist_drivers=None: dict(seen)
text = url_helper.read_file_or_url(source, timeout=float(request_timeout), retries=0).contents
config = util.load_yaml(text)
renderer = renderers.NAME_TO_RENDERER[name].Renderer({})
state = network_state.parse_net_config_data(config, renderer=renderer)
files = {}
with tempfile.TemporaryDirectory() as target:
    renderer.render_network_state(state, target=target)
    for folder, _, names in os.walk(target):
        for found in names:
            path = os.path.join(folder, found)
            with open(path) as handle:
                files[os.path.relpath(path, target)] = handle.read()
report = {
    "interfaces": {iface["name"]: iface for iface in state.iter_interfaces()},
    "nameservers": state.dns_nameservers,
    "files": files,
}
json.dump(report, sys.stdout)
"""
"""Run as `python3 -I -c RENDER_PROGRAM SOURCE RENDERER NICS REQUEST_TIMEOUT`: SOURCE a file or
URL of network config YAML, NICS a JSON {mac: name} of the interfaces to pretend the OS has, or
"-" to read them from /sys/class/net."""


@dataclass(frozen=True, slots=True)
class Rendered:
    interfaces: dict[str, dict[str, Any]]
    """cloud-init's network state (its v1 form): by name, with `subnets` (address, prefix,
    gateway, routes, dns_nameservers), `vlan-raw-device`/`vlan_id`, `bond-master`, `bond-mode`."""
    nameservers: list[str]
    """The global DNS servers the renderer writes."""
    files: dict[str, str]
    """What the renderer wrote, by path (e.g. `etc/network/interfaces`); empty for none."""
    stderr: str

    @property
    def complaints(self) -> list[str]:
        """cloud-init's WARNING and ERROR log lines: what it skipped or could not read."""
        return [
            line for line in self.stderr.splitlines() if "[WARNING]" in line or "[ERROR]" in line
        ]


def render_network(
    source: str,
    renderer: str,
    *,
    nics: dict[str, str] | None = None,
    wrap: Sequence[str] = (),
    timeout: float = 60,
) -> Rendered:
    """Network config YAML at `source` (a path or URL) as cloud-init applies it:
    `util.load_yaml`, `network_state.parse_net_config_data`, then `renderer` ("eni", "networkd",
    "netplan", "sysconfig", ...) into a temporary target. `nics` ({mac: name}) stands for the
    interfaces the OS has (cloud-init reads /sys/class/net otherwise, and renames NICs to their
    `set-name` before it renders: pass those names)."""
    argv = [RENDER_PROGRAM, source, renderer, "-" if nics is None else json.dumps(nics)]
    report, stderr, _ = _child(
        [*argv, str(REQUEST_TIMEOUT)], wrap, timeout, f"cloud-init's {renderer} render of {source}"
    )
    return Rendered(
        interfaces=report["interfaces"],
        nameservers=report["nameservers"],
        files=report["files"],
        stderr=stderr,
    )


def _child(
    program_and_args: Sequence[str], wrap: Sequence[str], timeout: float, what: str
) -> tuple[dict[str, Any], str, int]:
    """Run `python3 -I -c PROGRAM ARGS...` behind `wrap`, without proxy variables: its JSON
    report, its log and its exit status; CrawlError (naming `what`) when it printed no report."""
    needs_cloudinit()
    # -I: only the system's dist-packages, whatever PYTHONPATH or the working directory hold.
    program, *args = program_and_args
    env = {
        name: value for name, value in os.environ.items() if name.lower() not in _PROXY_VARIABLES
    }
    done = subprocess.run(
        [*wrap, PYTHON, "-I", "-c", program, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    try:
        return json.loads(done.stdout), done.stderr, done.returncode
    except json.JSONDecodeError:
        raise CrawlError(
            f"{what} printed no report (exit {done.returncode}):\n{done.stderr}"
        ) from None
