"""Real cloud-init (Debian's 22.4) against a fake EC2 tree: proves the cloudinit_client helper
and pins down what cloud-init makes of the answers, for metalflow's metadata server tests.

The fake serves fixed paths from a dict on 127.0.0.1; crawl() itself raises unavailable() (a
failure under CI, a skip elsewhere) when /usr/bin/python3 has no cloudinit.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.integration.cloudinit_client import crawl, crawl_imdsv2, needs_cloudinit

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0 ops@example"
TOKEN = "tok-3f9c"
USER_DATA = b"#cloud-config\nhostname: web1\n\xff binary tail"
META = "/2009-04-04/meta-data/"


def tree(**overrides: bytes | None) -> dict[str, bytes | None]:
    """A small EC2 tree; an override of None takes the path out (a 404)."""
    paths: dict[str, bytes | None] = {
        META: b"instance-id\nhostname\npublic-keys/",
        META + "instance-id": b"i-1",
        META + "hostname": b"web1",
        META + "public-keys/": b"0=mykey",
        META + "public-keys/0/openssh-key": KEY.encode(),
        "/2009-04-04/user-data": USER_DATA,
    }
    paths.update(overrides)
    return {path: body for path, body in paths.items() if body is not None}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass(slots=True)
class FakeEc2:
    paths: dict[str, bytes | None]
    token: str | None = None
    """When set, `PUT /latest/api/token` hands it out and every GET must carry it (else 401)."""
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def get_paths(self) -> list[str]:
        return [request.path for request in self.requests if request.method == "GET"]


@pytest.fixture
def fake() -> Iterator[FakeEc2]:
    """A fake EC2 metadata service on 127.0.0.1; tests fill in `paths` and `token`."""
    state = FakeEc2(paths={})

    class Handler(BaseHTTPRequestHandler):
        def answer(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def record(self) -> None:
            state.requests.append(Request(self.command, self.path, dict(self.headers.items())))

        def do_GET(self) -> None:
            self.record()
            body = state.paths.get(self.path)
            if state.token is not None and self.headers["X-aws-ec2-metadata-token"] != state.token:
                self.answer(401)
            elif body is None:
                self.answer(404)
            else:
                self.answer(200, body)

        def do_PUT(self) -> None:
            self.record()
            ttl = self.headers["X-aws-ec2-metadata-token-ttl-seconds"]
            if self.path != "/latest/api/token" or state.token is None:
                self.answer(404)
            elif ttl is None:
                self.answer(400)
            else:
                self.answer(200, state.token.encode())

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the recorded requests are what the tests look at."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_installed_cloudinit_is_the_one_documented() -> None:
    assert needs_cloudinit().startswith("22.4")


def test_crawl_reads_the_tree_the_way_cloudinit_walks_it(fake: FakeEc2) -> None:
    fake.paths = tree()
    result = crawl(fake.url)
    assert result.returncode == 0, result.stderr
    assert result.metadata == {
        "instance-id": "i-1",
        "hostname": "web1",
        "public-keys": {"mykey": KEY},
    }
    assert result.userdata == USER_DATA
    assert result.token is None
    # user-data first; then each listing, subdirectories before the leaves; one try each.
    assert fake.get_paths() == [
        "/2009-04-04/user-data",
        META,
        META + "public-keys/",
        META + "public-keys/0/openssh-key",
        META + "instance-id",
        META + "hostname",
    ]
    assert {request.headers["User-Agent"] for request in fake.requests} == {"Cloud-Init/22.4.2"}


@pytest.mark.parametrize(
    ("body", "decoded"),
    [
        (b"i-1", "i-1"),
        (b"i-1\n", ["i-1"]),
        (b"a\nb", ["a", "b"]),
        (b'{"zone": "ams1"}', {"zone": "ams1"}),
        (b"", ""),
    ],
)
def test_leaves_are_decoded_by_cloudinit(fake: FakeEc2, body: bytes, decoded: object) -> None:
    """A trailing newline turns a leaf (an SSH key too) into a list of lines."""
    fake.paths = tree(**{META + "instance-id": body, META + "public-keys/0/openssh-key": body})
    metadata = crawl(fake.url).metadata
    assert metadata["instance-id"] == decoded
    assert metadata["public-keys"] == {"mykey": decoded}


def test_user_data_404_is_none_and_not_an_error(fake: FakeEc2) -> None:
    """cloud-init returns the str "" for a 404, after one request, without logging a failure."""
    fake.paths = tree(**{"/2009-04-04/user-data": None})
    result = crawl(fake.url)
    assert result.userdata is None
    assert result.metadata["instance-id"] == "i-1"
    assert fake.get_paths().count("/2009-04-04/user-data") == 1
    assert "Failed fetching userdata" not in result.stderr


def test_empty_user_data_is_empty_bytes(fake: FakeEc2) -> None:
    fake.paths = tree(**{"/2009-04-04/user-data": b""})
    assert crawl(fake.url).userdata == b""


def test_one_404_in_the_walk_loses_all_metadata(fake: FakeEc2) -> None:
    fake.paths = tree(**{META + "hostname": None})
    result = crawl(fake.url)
    assert result.metadata == {}
    assert f"Failed fetching meta-data/ from url {fake.url}{META}" in result.stderr
    assert fake.get_paths().count(META + "hostname") == 1, "retries=0: no second try"
    assert result.userdata == USER_DATA


def test_nothing_listening_is_empty_and_quick() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        result = crawl(f"http://127.0.0.1:{closed.getsockname()[1]}", timeout=20)
    assert (result.metadata, result.userdata, result.returncode) == ({}, None, 0)
    assert "Connection refused" in result.stderr


def test_imdsv2_puts_for_a_token_and_sends_it_on_every_request(fake: FakeEc2) -> None:
    fake.paths = tree()
    fake.token = TOKEN
    result = crawl_imdsv2(fake.url)
    assert result.metadata["public-keys"] == {"mykey": KEY}
    assert result.userdata == USER_DATA
    assert result.token == TOKEN
    put, *gets = fake.requests
    assert (put.method, put.path) == ("PUT", "/latest/api/token")
    assert put.headers["X-aws-ec2-metadata-token-ttl-seconds"] == "21600"
    assert "X-aws-ec2-metadata-token" not in put.headers
    assert len(gets) == 6
    assert {request.headers["X-aws-ec2-metadata-token"] for request in gets} == {TOKEN}
    # With a headers_cb cloud-init sends only its headers: the GETs lose its User-Agent.
    assert put.headers["User-Agent"] == "Cloud-Init/22.4.2"
    assert all(request.headers["User-Agent"].startswith("python-requests/") for request in gets)
    assert TOKEN not in result.stderr, "cloud-init redacts the token in its log"


def test_imdsv1_against_a_token_only_service_gets_nothing(fake: FakeEc2) -> None:
    fake.paths = tree()
    fake.token = TOKEN
    result = crawl(fake.url)
    assert (result.metadata, result.userdata) == ({}, None)
    assert "401" in result.stderr


def test_imdsv2_without_a_token_route_falls_back_to_imdsv1(fake: FakeEc2) -> None:
    """As DataSourceEc2._get_headers does when the PUT fails."""
    fake.paths = tree()
    result = crawl_imdsv2(fake.url)
    assert result.token is None
    assert "Unable to get API token" in result.stderr
    assert result.metadata["instance-id"] == "i-1"
    assert all("X-aws-ec2-metadata-token" not in request.headers for request in fake.requests)


def test_wrap_runs_the_child_behind_an_argv_prefix(fake: FakeEc2) -> None:
    fake.paths = tree()
    wrapper = ["sh", "-c", 'echo wrapped >&2; exec "$@"', "sh"]
    result = crawl(fake.url, wrap=wrapper)
    assert result.stderr.startswith("wrapped\n")
    assert result.metadata["hostname"] == "web1"
