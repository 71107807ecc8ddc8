"""Binary user-data end to end: gzip'd cloud-config applied as `userDataBase64` comes back
byte-exact from every user-data path, to curl and to cloud-init's own crawler, and decompresses
with cloud-init's own code; user-data over the limit is refused and writes nothing."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.bootlab import METALFLOW, BootLab, Host, Metalflow
from tests.integration.cloudinit_client import PYTHON, crawl, needs_cloudinit
from tests.manifests import interface, machine, stream

BASE = "http://192.0.2.1:50061"
USER_DATA_PATHS = ("/2009-04-04/user-data", "/latest/user-data", "/userdata", "/nocloud/user-data")
LIMIT = 64 * 1024

# Over the limit as text, well under it gzip'd: what the limit's error message tells one to do.
CLOUD_CONFIG = "#cloud-config\nhostname: web1\nwrite_files:\n" + "".join(
    f"  - {{path: /etc/motd.d/{n:04d}, content: 'line {n} of the message of the day'}}\n"
    for n in range(1500)
)
GZIPPED = gzip.compress(CLOUD_CONFIG.encode(), mtime=0)
DECOMP_GZIP = (
    "import sys\nfrom cloudinit import util\n"
    "data = open(sys.argv[1], 'rb').read()\n"
    "sys.stdout.write(util.decomp_gzip(data, quiet=False))\n"
)
"""cloud-init's own decompression of user-data (quiet=False: a failure raises, not passes)."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def manifest(name: str, mac: str, ip: str, **user_data: str | None) -> str:
    return stream(
        machine(
            name,
            interface(mac, ip),
            hostname=f"{name}.lab",
            metadata={"instance": {"id": f"id-{name}"}},
            **user_data,
        )
    )


def apply(metalflow: Metalflow, text: str) -> httpx.Response:
    with metalflow.api() as api:
        return api.post(
            "/api/v1/apply", content=text.encode(), headers={"Content-Type": "application/yaml"}
        )


def shown(metalflow: Metalflow, name: str) -> dict[str, Any]:
    with metalflow.api() as api:
        found = api.get(f"/api/v1/machines/{name}")
    assert found.status_code == 200, found.text
    document: dict[str, Any] = found.json()
    return document


def download(host: Host, url: str, target: Path) -> bytes:
    """The body exactly as curl wrote it to a file, from inside the host's namespace."""
    done = host.run(["curl", "-sS", "-o", str(target), "-w", "%{http_code}", url], check=False)
    assert done.stdout == "200", f"{url}: {done.stdout} {done.stderr}"
    return target.read_bytes()


def decompress_with_cloudinit(path: Path) -> str:
    needs_cloudinit()
    done = subprocess.run(
        [PYTHON, "-I", "-c", DECOMP_GZIP, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def served(lab: BootLab) -> tuple[Metalflow, Host]:
    metalflow = lab.metalflow()
    applied = apply(
        metalflow, manifest("web1", "52:54:00:00:5e:01", "192.0.2.11", userDataBase64=b64(GZIPPED))
    )
    assert applied.status_code == 200, applied.text
    web1 = lab.host("52:54:00:00:5e:01")
    web1.set_address("192.0.2.11/24")
    return metalflow, web1


def test_gzipped_user_data_comes_back_byte_exact_from_every_path(
    served: tuple[Metalflow, Host], tmp_path: Path
) -> None:
    assert len(CLOUD_CONFIG) > LIMIT > len(GZIPPED)
    _, web1 = served
    for index, path in enumerate(USER_DATA_PATHS):
        body = download(web1, f"{BASE}{path}", tmp_path / f"user-data-{index}")
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(GZIPPED).hexdigest(), path
    assert decompress_with_cloudinit(tmp_path / "user-data-0") == CLOUD_CONFIG


def test_cloud_init_crawls_the_same_bytes_and_decompresses_them(
    served: tuple[Metalflow, Host], tmp_path: Path
) -> None:
    _, web1 = served
    found = crawl(BASE, wrap=["ip", "netns", "exec", web1.namespace])
    assert found.returncode == 0, found.stderr
    assert found.metadata["instance-id"] == "id-web1"
    assert found.userdata == GZIPPED
    crawled = tmp_path / "crawled"
    crawled.write_bytes(found.userdata)
    config = decompress_with_cloudinit(crawled)
    assert config == CLOUD_CONFIG
    assert yaml.safe_load(config)["write_files"][1499]["path"] == "/etc/motd.d/1499"


def test_the_api_shows_it_back_in_a_form_that_applies_unchanged(
    served: tuple[Metalflow, Host],
) -> None:
    metalflow, _ = served
    machine = shown(metalflow, "web1")
    assert machine["userDataBase64"] == b64(GZIPPED) and machine["userData"] is None
    again = manifest(
        "web1",
        "52:54:00:00:5e:01",
        "192.0.2.11",
        userData=machine["userData"],
        userDataBase64=machine["userDataBase64"],
    )
    assert apply(metalflow, again).json()["results"][0]["action"] == "unchanged"
    with metalflow.api() as api:
        listed = api.get("/api/v1/machines").json()["items"]
    assert [m["userDataBase64"] for m in listed] == [b64(GZIPPED)]
    text = manifest(
        "web2", "52:54:00:00:5e:02", "192.0.2.12", userDataBase64=b64(b"#cloud-config\n")
    )
    assert apply(metalflow, text).status_code == 200
    as_text = shown(metalflow, "web2")
    assert (as_text["userData"], as_text["userDataBase64"]) == ("#cloud-config\n", None)


def test_too_large_user_data_is_refused_and_nothing_is_written(
    served: tuple[Metalflow, Host], tmp_path: Path
) -> None:
    metalflow, web1 = served
    incompressible = random.Random(7).randbytes(LIMIT + 1)
    too_large = {"userData": "#" * (LIMIT + 1), "userDataBase64": b64(incompressible)}
    for key, value in too_large.items():
        # A valid new machine first, in the same request: it must not be written either.
        text = "---\n".join(
            [
                manifest("web3", "52:54:00:00:5e:03", "192.0.2.13"),
                manifest("web1", "52:54:00:00:5e:01", "192.0.2.11", **{key: value}),
            ]
        )
        refused = apply(metalflow, text)
        assert refused.status_code == 422, refused.text
        detail = refused.json()["detail"]
        assert detail["field"] == f"documents[1].spec.{key}"
        assert f"{key} is {LIMIT + 1} bytes; the limit is {LIMIT} bytes" in detail["message"]
        assert (
            "gzip it and send the gzip'd bytes base64-encoded as userDataBase64"
            in detail["message"]
        )
        with metalflow.api() as api:
            assert api.get("/api/v1/machines/web3").status_code == 404
        assert shown(metalflow, "web1")["userDataBase64"] == b64(GZIPPED)
    assert download(web1, f"{BASE}/userdata", tmp_path / "after") == GZIPPED


def test_the_cli_exits_2_naming_the_field(served: tuple[Metalflow, Host], tmp_path: Path) -> None:
    metalflow, _ = served
    path = tmp_path / "web4.yaml"
    path.write_text(manifest("web4", "52:54:00:00:5e:04", "192.0.2.14", userData="#" * (LIMIT + 1)))
    env = {key: value for key, value in os.environ.items() if not key.startswith("METALFLOW_")}
    done = subprocess.run(
        [METALFLOW, "--url", metalflow.url, "--token", metalflow.token, "apply", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: documents[0].spec.userData: userData is 65537 bytes;"), line
    assert "the limit is 65536 bytes" in line and "userDataBase64" in line
    with metalflow.api() as api:
        assert api.get("/api/v1/machines/web4").status_code == 404
