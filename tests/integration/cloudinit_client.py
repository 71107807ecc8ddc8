"""Real cloud-init as the metadata client: its own EC2 crawler, run by the system python3.

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
    needs_cloudinit()
    # -I: only the system's dist-packages, whatever PYTHONPATH or the working directory hold.
    argv = [
        *wrap,
        PYTHON,
        "-I",
        "-c",
        CHILD_PROGRAM,
        mode,
        base_url,
        api_version,
        str(REQUEST_TIMEOUT),
    ]
    env = {
        name: value for name, value in os.environ.items() if name.lower() not in _PROXY_VARIABLES
    }
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise CrawlError(
            f"cloud-init crawl of {base_url} printed no report (exit {done.returncode}):\n"
            + done.stderr
        ) from None
    userdata = report["userdata"]
    return CrawlResult(
        metadata=report["metadata"],
        userdata=None if userdata is None else base64.b64decode(userdata),
        token=report["token"],
        stderr=done.stderr,
        returncode=done.returncode,
    )
