"""Netboot over HTTP against a live server: scripts follow the inventory and workflows, files
are served with Range and ETag, nothing outside the boot tree is reachable."""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from metalflow.boot.ipxe import NO_ACTIVE_WORKFLOW, NOT_CONFIGURED
from metalflow.config import Settings
from metalflow.errors import MetalflowError
from metalflow.urls import base_url
from tests.integration.conftest import AgentClient, LiveServer, apply, start_server
from tests.manifests import TINKERBELL_STACK, machine_yaml, simple_template
from tests.prerequisites import unavailable

MAC = "52:54:00:aa:00:01"
SYSTEM_IPXE = Path("/usr/lib/ipxe/undionly.kpxe")


@dataclass
class BootFiles:
    kernel: Path
    initrd: Path
    ipxe_dir: Path
    boot_dir: Path
    secret: Path


@pytest.fixture
def files(tmp_path: Path) -> BootFiles:
    root = tmp_path / "boot-files"
    ipxe_dir, boot_dir = root / "ipxe", root / "extra"
    (boot_dir / "menus").mkdir(parents=True)
    ipxe_dir.mkdir()
    kernel, initrd = root / "vmlinuz", root / "initrd.img"
    kernel.write_bytes(bytes(range(256)) * 40)
    initrd.write_bytes(b"initramfs" * 500)
    (ipxe_dir / "undionly.kpxe").write_bytes(bytes(reversed(range(256))) * 3)
    (ipxe_dir / "ipxe.efi").write_bytes(b"MZ" + b"\0" * 500)
    (boot_dir / "menus" / "rescue.ipxe").write_text("#!ipxe\necho rescue\n")
    secret = root / "secret.txt"
    secret.write_text("not for machines")
    (boot_dir / "escape").symlink_to(secret)
    return BootFiles(kernel, initrd, ipxe_dir, boot_dir, secret)


@pytest.fixture
def serve(settings: Settings, files: BootFiles) -> Iterator[Callable[..., LiveServer]]:
    """Start a server with the boot files configured, plus any setting overrides."""
    started: list[LiveServer] = []

    def start(**overrides: Any) -> LiveServer:
        boot = {
            "kernel": files.kernel,
            "initrd": files.initrd,
            "ipxe_dir": files.ipxe_dir,
            "boot_dir": files.boot_dir,
            "kernel_args": "quiet",
        }
        server = start_server(settings.model_copy(update={**boot, **overrides}))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def live(serve: Callable[..., LiveServer]) -> LiveServer:
    return serve()


@pytest.fixture
def boot(live: LiveServer) -> Iterator[httpx.Client]:
    """What firmware has: plain HTTP, no credentials."""
    with httpx.Client(base_url=live.url, timeout=30) as client:
        yield client


def script(boot: httpx.Client, mac: str = MAC) -> str:
    response = boot.get(f"/boot/{mac}.ipxe")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["cache-control"] == "no-store"
    return response.text


def wait_for_script(boot: httpx.Client, words: str, mac: str = MAC) -> str:
    """The index follows committed changes within milliseconds, asynchronously: poll."""
    deadline = time.monotonic() + 10
    while True:
        text = script(boot, mac)
        if words in text or time.monotonic() > deadline:
            assert words in text, text
            return text
        time.sleep(0.02)


def events(api: httpx.Client, kind: str, count: int = 1, **params: str) -> list[dict[str, Any]]:
    """Boot events are written in batches every 0.2 s: poll until `count` are there."""
    deadline = time.monotonic() + 10
    while True:
        query = {"kind": kind, "limit": "1000", **params}
        items: list[dict[str, Any]] = api.get("/api/v1/events", params=query).json()["items"]
        if len(items) >= count or time.monotonic() > deadline:
            assert len(items) >= count, items
            return items
        time.sleep(0.05)


def exit_reason(text: str) -> str:
    lines = text.splitlines()
    assert lines[0] == "#!ipxe" and lines[-1] == "exit 1", text
    return lines[1].removeprefix("echo metalflow: ")


def enrol(api: httpx.Client, name: str = "web1", mac: str = MAC, ip: str | None = None) -> None:
    response = apply(api, machine_yaml(name, mac, ip) + "---\n" + simple_template(count=1))
    assert response.status_code == 200, response.text


def provision(api: httpx.Client, name: str = "web1") -> dict[str, Any]:
    response = api.post(f"/api/v1/machines/{name}/provision", json={"template": "ubuntu"})
    assert response.status_code == 201, response.text
    workflow: dict[str, Any] = response.json()
    return workflow


def script_token(text: str) -> str:
    found = re.search(r" metalflow\.token=(\S+) ", text)
    assert found is not None, text
    return found.group(1)


def without_token(text: str) -> str:
    """Every fetch makes a fresh boot token; the rest of the script is the same."""
    return re.sub(r" metalflow\.token=\S+ ", " metalflow.token=TOKEN ", text)


def test_script_follows_the_workflow(
    live: LiveServer, api: httpx.Client, boot: httpx.Client
) -> None:
    enrol(api, ip="127.0.0.1")
    assert exit_reason(wait_for_script(boot, NO_ACTIVE_WORKFLOW)) == NO_ACTIVE_WORKFLOW

    workflow = provision(api)
    text = wait_for_script(boot, "metalflow.token=")
    token = script_token(text)
    claim = live.services.keyring.parse_boot_token(token)
    assert claim is not None, token
    assert (claim.workflow_id, claim.start) == (workflow["id"], 1)
    kernel_line = next(line for line in text.splitlines() if line.startswith("kernel "))
    assert kernel_line == (
        f"kernel {live.url}/boot/install/vmlinuz metalflow.url={live.url}"
        f" metalflow.token={token} metalflow.mac={MAC} metalflow.machine=web1"
        " console=tty0 console=ttyS0,115200 quiet initrd=initrd.img || goto retry"
    )
    assert f"initrd --name initrd.img {live.url}/boot/install/initrd.img || goto retry" in text
    assert without_token(script(boot, MAC.replace(":", "-").upper())) == without_token(text)

    cancelled = api.post(f"/api/v1/workflows/{workflow['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert exit_reason(wait_for_script(boot, NO_ACTIVE_WORKFLOW)) == NO_ACTIVE_WORKFLOW

    provision(api)
    agent_token = api.post("/api/v1/machines/web1/agent-token").json()["token"]
    agent = AgentClient(live.url, agent_token, MAC)
    wait_for_script(boot, "metalflow.token=")
    while (action := agent.next()) is not None:
        agent.report(action["id"], "success", exit_code=0)
    agent.close()
    text = wait_for_script(boot, "netboot disabled")
    assert exit_reason(text) == "netboot disabled for this interface"
    assert "metalflow.token" not in text

    served = events(api, "boot.script", 2, machine="web1")
    assert {event["data"]["script"] for event in served} == {"exit", "install"}
    install = next(event for event in served if event["data"]["script"] == "install")
    assert install["data"]["mac"] == MAC and install["data"]["remote"] == "127.0.0.1"
    assert install["data"]["token"] == "boot" and install["data"]["start"] == 1
    assert token not in str(served) and agent_token not in str(served)


def test_unknown_mac_exits_with_the_reason(api: httpx.Client, boot: httpx.Client) -> None:
    text = script(boot, "52:54:00:ff:ff:ff")
    assert exit_reason(text) == "unknown machine 52:54:00:ff:ff:ff: not in inventory"
    unknown = events(api, "boot.script")
    assert unknown[0]["machine"] is None
    assert unknown[0]["data"]["script"] == "unknown"
    assert unknown[0]["data"]["mac"] == "52:54:00:ff:ff:ff"


def test_discovery_boots_unknown_machines_without_a_token(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve(discovery=True)
    with httpx.Client(base_url=live.url) as boot:
        text = script(boot, "52:54:00:ff:ff:ff")
    assert "metalflow.mac=52:54:00:ff:ff:ff metalflow.discovery=1" in text
    assert "metalflow.token" not in text


def test_install_environment_not_configured(serve: Callable[..., LiveServer]) -> None:
    live = serve(kernel=None, initrd=None)
    with live.client() as api, httpx.Client(base_url=live.url) as boot:
        enrol(api)
        provision(api)
        assert exit_reason(wait_for_script(boot, "not configured")) == NOT_CONFIGURED
        for path, setting in [("vmlinuz", "METALFLOW_KERNEL"), ("initrd.img", "METALFLOW_INITRD")]:
            response = boot.get(f"/boot/install/{path}")
            assert response.status_code == 404
            assert setting in response.json()["detail"]["message"]


def test_auto_script_by_mac_and_by_source_address(api: httpx.Client, boot: httpx.Client) -> None:
    nobody = boot.get("/boot/auto.ipxe")
    assert nobody.status_code == 200
    assert exit_reason(nobody.text).startswith("who are you?")

    enrol(api, ip="127.0.0.1")
    provision(api)
    by_mac = without_token(wait_for_script(boot, "metalflow.token="))
    by_mac_param = boot.get("/boot/auto.ipxe", params={"mac": MAC.upper()}).text
    assert without_token(by_mac_param) == by_mac
    deadline = time.monotonic() + 10
    while (by_address := without_token(boot.get("/boot/auto.ipxe").text)) != by_mac:
        assert time.monotonic() < deadline, by_address
        time.sleep(0.02)


def test_bad_mac_is_400_naming_mac(boot: httpx.Client) -> None:
    for path, params in [("/boot/52:54:00.ipxe", {}), ("/boot/auto.ipxe", {"mac": "nope"})]:
        response = boot.get(path, params=params)
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert detail["field"] == "mac" and "not a MAC address" in detail["message"]


def with_boot(name: str, mac: str, boot_yaml: str, ip: str | None = None) -> str:
    return machine_yaml(name, mac, ip) + "  boot:\n" + boot_yaml


def test_custom_script_and_chain_url_via_apply(api: httpx.Client, boot: httpx.Client) -> None:
    custom = "#!ipxe\necho rescue ${net0/mac}\nshell\n"
    stream = (
        with_boot(
            "rescue1",
            "52:54:00:aa:00:02",
            "    ipxe_script: |\n      #!ipxe\n      echo rescue ${net0/mac}\n      shell\n",
        )
        + "---\n"
        + with_boot("chain1", "52:54:00:aa:00:03", "    ipxe_url: https://boot.example/c.ipxe\n")
    )
    response = apply(api, stream)
    assert response.status_code == 200, response.text
    assert wait_for_script(boot, "rescue", "52:54:00:aa:00:02") == custom
    chained = wait_for_script(boot, "chain ", "52:54:00:aa:00:03")
    assert "chain --replace --autofree https://boot.example/c.ipxe || goto failed" in chained
    assert api.get("/api/v1/machines/chain1").json()["boot"] == {
        "ipxe_script": None,
        "ipxe_url": "https://boot.example/c.ipxe",
        "kernel_args": None,
        "console": None,
    }
    assert api.get("/api/v1/machines/rescue1").json()["boot"]["ipxe_script"] == custom
    again = apply(api, stream).json()["results"]
    assert [result["action"] for result in again] == ["unchanged", "unchanged"]

    dropped = apply(api, machine_yaml("chain1", "52:54:00:aa:00:03"))
    assert dropped.json()["results"][0]["action"] == "updated"
    assert api.get("/api/v1/machines/chain1").json()["boot"] is None
    text = wait_for_script(boot, NO_ACTIVE_WORKFLOW, "52:54:00:aa:00:03")
    assert exit_reason(text) == NO_ACTIVE_WORKFLOW


def test_machine_kernel_args_and_console(api: httpx.Client, boot: httpx.Client) -> None:
    boot_yaml = "    kernel_args: ip=dhcp nomodeset\n    console: console=ttyS1,57600\n"
    stream = with_boot("web1", MAC, boot_yaml, "127.0.0.1") + "---\n" + simple_template()
    assert apply(api, stream).is_success
    provision(api)
    text = wait_for_script(boot, "metalflow.token=")
    assert "metalflow.machine=web1 console=ttyS1,57600 quiet ip=dhcp nomodeset initrd=" in text


@pytest.mark.parametrize(
    ("boot_yaml", "field", "words"),
    [
        ("    kernel_args: 'a ${x}'\n", "spec.boot.kernel_args", "must not contain '${'"),
        ('    console: "ttyS0\\nshell"\n', "spec.boot.console", "one line of printable"),
        ("    kernel_args: a || shell\n", "spec.boot.kernel_args", "'||'"),
        ("    ipxe_script: echo hi\n", "spec.boot.ipxe_script", "must start with the line"),
        ("    ipxe_url: ftp://x/y\n", "spec.boot.ipxe_url", "http:// or https://"),
        ("    colour: red\n", "spec.boot.colour", "unknown field"),
    ],
)
def test_unsafe_boot_options_are_refused_at_apply(
    api: httpx.Client, boot_yaml: str, field: str, words: str
) -> None:
    response = apply(api, with_boot("web1", MAC, boot_yaml))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["field"] == f"documents[0].{field}" and words in detail["message"], detail
    assert api.get("/api/v1/machines/web1").status_code == 404


def test_tinkerbell_hardware_ipxe_url_and_contents(api: httpx.Client, boot: httpx.Client) -> None:
    hardware = TINKERBELL_STACK.split("---\n")[0]
    with_url = hardware.replace(
        "        allowWorkflow: true\n",
        "        allowWorkflow: true\n        ipxe:\n          url: http://192.0.2.1/x.ipxe\n"
        '          contents: ""\n',
    )
    assert apply(api, with_url).status_code == 200
    assert "chain --replace --autofree http://192.0.2.1/x.ipxe" in wait_for_script(
        boot, "chain ", "3c:ec:ef:4c:4f:54"
    )
    with_contents = with_url.replace('contents: ""', 'contents: "#!ipxe\\nexit 3\\n"')
    assert apply(api, with_contents).status_code == 200
    assert wait_for_script(boot, "exit 3", "3c:ec:ef:4c:4f:54") == "#!ipxe\nexit 3\n"
    refused = apply(api, with_url.replace("http://192.0.2.1/x.ipxe", "tftp://x/y"))
    assert refused.status_code == 422
    assert refused.json()["detail"]["field"] == "spec.interfaces[0].netboot.ipxe.url"


def test_assets_full_range_etag_and_head(files: BootFiles, boot: httpx.Client) -> None:
    data = (files.ipxe_dir / "undionly.kpxe").read_bytes()
    full = boot.get("/boot/assets/undionly.kpxe")
    assert full.status_code == 200 and full.content == data
    assert full.headers["accept-ranges"] == "bytes"

    part = boot.get("/boot/assets/undionly.kpxe", headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == data[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(data)}"

    beyond = boot.get("/boot/assets/undionly.kpxe", headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"

    etag = full.headers["etag"]
    cached = boot.get("/boot/assets/undionly.kpxe", headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["etag"] == etag
    listed = boot.get("/boot/assets/undionly.kpxe", headers={"If-None-Match": f'"x", W/{etag}'})
    assert listed.status_code == 304
    stale = boot.get("/boot/assets/undionly.kpxe", headers={"If-None-Match": '"other"'})
    assert stale.status_code == 200 and stale.content == data

    head = boot.head("/boot/assets/ipxe.efi")
    assert head.status_code == 200 and head.headers["content-length"] == "502"
    menu = boot.get("/boot/assets/menus/rescue.ipxe")
    assert menu.status_code == 200 and menu.text == "#!ipxe\necho rescue\n"


def raw_get(live: LiveServer, path: str) -> int:
    """A request line sent exactly as written: no client normalises `..` away."""
    connection = http.client.HTTPConnection(live.settings.http_host, live.settings.http_port)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def test_nothing_outside_the_boot_tree(live: LiveServer, boot: httpx.Client) -> None:
    for path in [
        "/boot/assets/../secret.txt",
        "/boot/assets/%2e%2e/secret.txt",
        "/boot/assets/%2E%2E%2Fsecret.txt",
        "/boot/assets/menus/..%2f..%2fsecret.txt",
        "/boot/assets/escape",
        "/boot/assets/menus",
        "/boot/assets/%00undionly.kpxe",
    ]:
        assert raw_get(live, path) == 403, path
    for path in [
        "/boot/assets//etc/passwd",
        "/boot/assets/%2fetc%2fpasswd",
        "/boot/assets/vmlinuz",
        "/boot/assets/nothing.efi",
    ]:
        assert raw_get(live, path) == 404, path
    missing = boot.get("/boot/assets/nothing.efi").json()["detail"]
    assert missing["field"] == "name" and "not in the boot tree" in missing["message"]


def test_install_files_with_range_and_events(
    files: BootFiles, api: httpx.Client, boot: httpx.Client
) -> None:
    enrol(api, ip="127.0.0.1")
    deadline = time.monotonic() + 10
    while "who are you" in boot.get("/boot/auto.ipxe").text:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    kernel = boot.get("/boot/install/vmlinuz")
    assert kernel.status_code == 200 and kernel.content == files.kernel.read_bytes()
    initrd = boot.get("/boot/install/initrd.img", headers={"Range": "bytes=0-8"})
    assert initrd.status_code == 206 and initrd.content == b"initramfs"
    fetched = events(api, "boot.asset", 2)
    by_name = {event["data"]["name"]: event for event in fetched}
    assert by_name["vmlinuz"]["data"]["range"] == "full"
    assert by_name["initrd.img"]["data"]["range"] == "bytes=0-8"
    assert by_name["vmlinuz"]["machine"] == "web1"


def test_system_ipxe_binaries(serve: Callable[..., LiveServer]) -> None:
    """Debian's ipxe package, as `metalflow up` serves it by default."""
    if not SYSTEM_IPXE.is_file():
        unavailable(f"{SYSTEM_IPXE} is missing: apt-get install ipxe")
    live = serve(ipxe_dir=SYSTEM_IPXE.parent, boot_dir=None)
    with httpx.Client(base_url=live.url) as boot:
        response = boot.get("/boot/assets/undionly.kpxe")
    assert response.status_code == 200 and response.content == SYSTEM_IPXE.read_bytes()


def test_base_url_prefers_public_then_address_then_host() -> None:
    public = Settings(public_url="https://boot.example/mf/", http="0.0.0.0:7080")
    assert base_url(public, "evil:1") == "https://boot.example/mf"
    assert base_url(Settings(http="192.0.2.1:8080"), "other:1") == "http://192.0.2.1:8080"
    assert base_url(Settings(http="[::1]:8080"), None) == "http://[::1]:8080"
    wildcard = Settings(http="0.0.0.0:7080")
    assert base_url(wildcard, "192.0.2.1:7080") == "http://192.0.2.1:7080"
    assert base_url(wildcard, "[2001:db8::1]:7080") == "http://[2001:db8::1]:7080"
    for host in [None, "a b", "h/${x}", "h:port", ""]:
        with pytest.raises(MetalflowError) as caught:
            base_url(wildcard, host)
        assert caught.value.field == "host"
