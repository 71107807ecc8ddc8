"""The machine agent for real: image2disk against a local HTTP server, disk actions on loop
devices, and the whole agent (from a zipapp) driving a workflow on a live metalflow."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from metalflow.agent.actions import image as image_module
from metalflow.agent.actions.base import ActionError, Context
from metalflow.agent.actions.disk import cexec, format_, partition, wipe, writefile
from metalflow.agent.actions.image import image2disk
from metalflow.agent.client import Client, Conflict, ProtocolError, Stopped
from metalflow.agent.runner import Runner
from metalflow.agent.system import System
from metalflow.config import Settings
from tests.integration.agent_http import Images, Script, scripted, serve
from tests.integration.conftest import LiveServer, apply, start_server
from tests.manifests import machine_yaml, template_yaml
from tests.prerequisites import needs_root, needs_tool

MIB = 1 << 20
SRC = Path(__file__).resolve().parents[2] / "src" / "metalflow"


def image_bytes(size: int = 3 * MIB + 12345) -> bytes:
    """Compressible but not trivial: a boot sector, text, zeros and noise."""
    noise = hashlib.sha256(b"seed").digest() * (size // 64)
    return (b"\xeb\x63\x90MFTEST" + bytes(MIB) + noise)[:size]


def zstd_compress(data: bytes) -> bytes:
    tool = needs_tool("zstd", "zstd")
    return subprocess.run([tool, "-c"], input=data, capture_output=True, check=True).stdout


COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "raw": lambda data: data,
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "zst": zstd_compress,
}


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_module, "RETRY_PAUSE", 0.02)


@pytest.fixture
def images() -> Iterator[Images]:
    with serve(Images()) as served:
        yield served


def garbage_disk(path: Path, size: int = 8 * MIB) -> Path:
    path.write_bytes(b"\xa5" * size)
    return path


def run(env: dict[str, str], system: System | None = None) -> list[str]:
    lines: list[str] = []
    ctx = Context(env=env, log=lines.append, system=system or System(), action="image2disk")
    image2disk(ctx)
    return lines


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
def test_image2disk_writes_each_format(images: Images, tmp_path: Path, suffix: str) -> None:
    data = image_bytes()
    images.files[f"/os.{suffix}"] = COMPRESS[suffix](data)
    disk = garbage_disk(tmp_path / "disk")
    digest = hashlib.sha256(images.files[f"/os.{suffix}"]).hexdigest()
    lines = run(
        {
            "IMG_URL": f"{images.url}/os.{suffix}",
            "DEST_DISK": str(disk),
            "COMPRESSED": "false" if suffix == "raw" else "true",
            "CHECKSUM": f"sha256:{digest}",
        }
    )
    written = disk.read_bytes()
    assert len(written) == 8 * MIB, "the target must not be truncated"
    assert written[: len(data)] == data
    assert written[len(data) : 7 * MIB] == b"\xa5" * (7 * MIB - len(data))
    assert written[7 * MIB :] == bytes(MIB), "the backup GPT area must be zeroed"
    assert f"sha256 verified: {digest}" in lines
    assert any("MiB/s" in line for line in lines)


def test_image2disk_detects_compression_without_the_flag(images: Images, tmp_path: Path) -> None:
    data = image_bytes(MIB)
    images.files["/noext"] = lzma.compress(data)
    disk = garbage_disk(tmp_path / "disk")
    lines = run({"IMG_URL": f"{images.url}/noext", "DEST_DISK": str(disk)})
    assert disk.read_bytes()[: len(data)] == data
    assert any("(xz)" in line for line in lines)


def test_image2disk_resumes_after_a_dropped_connection(images: Images, tmp_path: Path) -> None:
    data = image_bytes(5 * MIB)
    images.files["/os.gz"] = gzip.compress(data, compresslevel=1)
    images.cut_once.add("/os.gz")
    disk = garbage_disk(tmp_path / "disk")
    digest = hashlib.sha256(images.files["/os.gz"]).hexdigest()
    lines = run(
        {
            "IMG_URL": f"{images.url}/os.gz",
            "DEST_DISK": str(disk),
            "COMPRESSED": "true",
            "CHECKSUM": digest,
        }
    )
    assert disk.read_bytes()[: len(data)] == data
    half = len(images.files["/os.gz"]) // 2
    assert images.requests == [("/os.gz", None), ("/os.gz", f"bytes={half}-")]
    assert any(f"interrupted at byte {half}" in line for line in lines)
    assert f"sha256 verified: {digest}" in lines


def test_image2disk_retries_a_5xx(images: Images, tmp_path: Path) -> None:
    data = image_bytes(MIB)
    images.files["/os.raw"] = data
    images.fail_once["/os.raw"] = 503
    disk = garbage_disk(tmp_path / "disk")
    lines = run({"IMG_URL": f"{images.url}/os.raw", "DEST_DISK": str(disk)})
    assert disk.read_bytes()[: len(data)] == data
    assert any("HTTP Error 503" in line for line in lines)


def test_image2disk_refuses_a_server_that_cannot_resume(images: Images, tmp_path: Path) -> None:
    images.files["/os.raw"] = image_bytes(2 * MIB)
    images.cut_once.add("/os.raw")
    images.no_range = True
    with pytest.raises(ActionError, match=r"cannot resume .*HTTP 200"):
        run({"IMG_URL": f"{images.url}/os.raw", "DEST_DISK": str(garbage_disk(tmp_path / "d"))})


def test_image2disk_sha256_mismatch_fails(images: Images, tmp_path: Path) -> None:
    images.files["/os.raw"] = image_bytes(MIB)
    actual = hashlib.sha256(images.files["/os.raw"]).hexdigest()
    wrong = "0" * 64
    env = {
        "IMG_URL": f"{images.url}/os.raw",
        "DEST_DISK": str(garbage_disk(tmp_path / "d")),
        "CHECKSUM": f"sha256:{wrong}",
    }
    with pytest.raises(ActionError) as error:
        run(env)
    assert f"expected {wrong}, got {actual}" in str(error.value)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"DEST_DISK": "/x"}, "IMG_URL is not set"),
        ({"IMG_URL": "ftp://h/x", "DEST_DISK": "/x"}, "not an http:// or https:// URL"),
        ({"IMG_URL": "http://127.0.0.1:9/x"}, "DEST_DISK is not set"),
        (
            {"IMG_URL": "http://127.0.0.1:9/x", "DEST_DISK": "/nonexistent/disk"},
            "DEST_DISK /nonexistent/disk does not exist",
        ),
        (
            {"IMG_URL": "http://127.0.0.1:9/x", "DEST_DISK": "/dev/null", "COMPRESSED": "perhaps"},
            "COMPRESSED='perhaps' is not a boolean",
        ),
    ],
)
def test_image2disk_bad_input_names_the_variable(env: dict[str, str], match: str) -> None:
    with pytest.raises(ActionError, match=match):
        run(env)


def test_image2disk_http_errors_and_wrong_formats(images: Images, tmp_path: Path) -> None:
    disk = str(garbage_disk(tmp_path / "d", 2 * MIB))
    with pytest.raises(ActionError, match=r"HTTP 404.*check IMG_URL"):
        run({"IMG_URL": f"{images.url}/missing", "DEST_DISK": disk})
    images.files["/plain"] = image_bytes(MIB)
    with pytest.raises(ActionError, match=r"COMPRESSED=true but .* not gzip"):
        run({"IMG_URL": f"{images.url}/plain", "DEST_DISK": disk, "COMPRESSED": "true"})
    images.files["/big"] = gzip.compress(bytes(6 * MIB))
    with pytest.raises(ActionError, match="larger than DEST_DISK"):
        run({"IMG_URL": f"{images.url}/big", "DEST_DISK": disk})
    assert Path(disk).stat().st_size == 2 * MIB
    images.files["/vm.qcow2"] = b"QFI\xfb\x00\x00\x00\x03" + bytes(4096)

    class NoQemu(System):
        def which(self, name: str) -> str | None:
            return None if name == "qemu-img" else super().which(name)

    with pytest.raises(ActionError, match=r"qcow2.*qemu-img.*qemu-utils"):
        run({"IMG_URL": f"{images.url}/vm.qcow2", "DEST_DISK": disk}, NoQemu())


def test_image2disk_gives_up_on_an_unreachable_server(tmp_path: Path) -> None:
    disk = str(garbage_disk(tmp_path / "d", 2 * MIB))
    with pytest.raises(ActionError, match="failed 6 times, last at byte 0"):
        run({"IMG_URL": "http://127.0.0.1:9/os.raw", "DEST_DISK": disk})
    assert Path(disk).read_bytes() == b"\xa5" * (2 * MIB), "nothing is wiped before data comes"


def ctx_for(env: dict[str, str], name: str) -> tuple[Context, list[str]]:
    lines: list[str] = []
    return Context(env=env, log=lines.append, system=System(), action=name), lines


def test_wipe_zeroes_ends_of_a_file(tmp_path: Path) -> None:
    disk = garbage_disk(tmp_path / "d", 4 * MIB)
    ctx, _ = ctx_for({"DEST_DISK": str(disk)}, "wipe")
    wipe(ctx)
    data = disk.read_bytes()
    assert data[:MIB] == bytes(MIB) and data[-MIB:] == bytes(MIB)
    assert data[MIB : 3 * MIB] == b"\xa5" * (2 * MIB)


def test_wipe_zero_mode_zeroes_every_byte_and_bad_modes_are_refused(tmp_path: Path) -> None:
    disk = garbage_disk(tmp_path / "d", 4 * MIB)
    ctx, lines = ctx_for({"DEST_DISK": str(disk), "MODE": "zero"}, "wipe")
    wipe(ctx)
    assert disk.read_bytes() == bytes(4 * MIB)
    assert f"zero: {4 * MIB} of {4 * MIB} bytes" in lines
    for env, message in (
        ({"MODE": "shred"}, "MODE='shred' is not one of signatures, zero, discard"),
        ({"MODE": "discard"}, "MODE=discard needs a block device"),
    ):
        ctx, _ = ctx_for({"DEST_DISK": str(disk), **env}, "wipe")
        with pytest.raises(ActionError, match=message) as error:
            wipe(ctx)
        assert error.value.exit_code == 2


@pytest.mark.parametrize("mode", ["zero", "discard"])
def test_wipe_modes_on_a_loop_device(tmp_path: Path, mode: str) -> None:
    needs_root("wipe on a loop device (losetup)")
    losetup = needs_tool("losetup", "util-linux")
    backing = garbage_disk(tmp_path / "d", 8 * MIB)
    device = subprocess.run(
        [losetup, "-f", "--show", str(backing)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        ctx, _ = ctx_for({"DEST_DISK": device, "MODE": mode}, "wipe")
        wipe(ctx)
        with open(device, "rb") as handle:
            assert handle.read() == bytes(8 * MIB)
    finally:
        subprocess.run([losetup, "-d", device], check=False)


def test_cexec_without_chroot_logs_output() -> None:
    ctx, lines = ctx_for(
        {"CMD_LINE": "echo one; echo two >&2; exit 0", "DEFAULT_INTERPRETER": "/bin/sh -c"},
        "cexec",
    )
    cexec(ctx)
    assert lines == ["one", "two"]
    ctx, _ = ctx_for({"CMD_LINE": "sh -c 'exit 7'"}, "cexec")
    with pytest.raises(Exception, match="exited 7"):
        cexec(ctx)


@pytest.fixture
def loop_fs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """A loop device holding a fresh filesystem of the requested type."""
    fs_type, mkfs, package = request.param
    needs_root("writefile (losetup and mount)")
    losetup = needs_tool("losetup", "util-linux")
    tool = needs_tool(mkfs, package)
    image = tmp_path / f"part.{fs_type}"
    with image.open("wb") as handle:
        handle.truncate(64 * MIB)
    subprocess.run(
        [tool, *(["-q", "-F"] if fs_type == "ext4" else []), str(image)],
        check=True,
        capture_output=True,
    )
    device = subprocess.run(
        [losetup, "-f", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield device, fs_type
    finally:
        subprocess.run([losetup, "-d", device], check=False)


def read_back(device: str, fs_type: str, path: str) -> tuple[str, os.stat_result, int]:
    mount_dir = Path(
        subprocess.run(["mktemp", "-d"], capture_output=True, text=True, check=True).stdout.strip()
    )
    subprocess.run(["mount", "-t", fs_type, device, str(mount_dir)], check=True)
    try:
        target = mount_dir / path.lstrip("/")
        return target.read_text(), target.stat(), target.parent.stat().st_mode & 0o777
    finally:
        subprocess.run(["umount", str(mount_dir)], check=True)
        mount_dir.rmdir()


# ext4 only: the kernel CI runs on cannot mount vfat. writefile on FAT belongs in the e2e
# tests, whose VM kernel has vfat.
@pytest.mark.parametrize("loop_fs", [("ext4", "mkfs.ext4", "e2fsprogs")], indirect=True)
def test_writefile_on_a_loop_device(loop_fs: tuple[str, str]) -> None:
    device, fs_type = loop_fs
    contents = "network:\n  version: 2\n"
    env = {
        "DEST_DISK": device,
        "FS_TYPE": fs_type,
        "DEST_PATH": "/etc/netplan/../netplan/c.yaml",
        "CONTENTS": contents,
        "UID": "1000",
        "GID": "1000",
        "MODE": "0600",
        "DIRMODE": "0700",
    }
    ctx, lines = ctx_for(env, "writefile")
    writefile(ctx)
    text, stat, dir_mode = read_back(device, fs_type, "/etc/netplan/c.yaml")
    assert text == contents
    assert any(f"wrote {len(contents)} bytes to" in line for line in lines)
    assert (stat.st_uid, stat.st_gid, stat.st_mode & 0o777, dir_mode) == (1000, 1000, 0o600, 0o700)
    with pytest.raises(ActionError, match="FS_TYPE is not set"):
        writefile(ctx_for({k: v for k, v in env.items() if k != "FS_TYPE"}, "writefile")[0])


# --- the whole agent against a live metalflow -----------------------------------------------

MAC = "52:54:00:a6:00:01"


def template(name: str, image_url: str, disk: Path, checksum: str) -> str:
    return f"""\
apiVersion: metalflow/v1
kind: Template
metadata:
  name: {name}
spec:
  data: |
    version: "0.1"
    name: {name}
    global_timeout: 300
    tasks:
      - name: os-installation
        worker: "{{{{.device_1}}}}"
        actions:
          - name: stream-image
            image: quay.io/tinkerbell/actions/image2disk:latest
            timeout: 120
            environment:
              IMG_URL: "{image_url}"
              DEST_DISK: "{disk}"
              COMPRESSED: true
              CHECKSUM: "sha256:{checksum}"
          - name: reboot
            image: ghcr.io/tinkerbell/actions/reboot:latest
            timeout: 30
"""


def enrol(api: httpx.Client, body: str, machine: str = "m1") -> str:
    response = apply(api, machine_yaml(machine, MAC) + "---\n" + body)
    assert response.status_code == 200, response.text
    token: str = api.post(f"/api/v1/machines/{machine}/agent-token").json()["token"]
    provisioned = api.post(f"/api/v1/machines/{machine}/provision", json={"template": "os"})
    assert provisioned.status_code == 201, provisioned.text
    return token


def build_zipapp(path: Path) -> Path:
    """The agent as the install environment carries it: metalflow/agent only."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metalflow/__init__.py", "")
        archive.writestr(
            "__main__.py", "from metalflow.agent.__main__ import main\nraise SystemExit(main())\n"
        )
        for file in sorted((SRC / "agent").rglob("*.py")):
            archive.write(file, f"metalflow/{file.relative_to(SRC)}")
    return path


def test_agent_zipapp_provisions_a_machine(
    live: LiveServer, api: httpx.Client, images: Images, tmp_path: Path
) -> None:
    data = image_bytes()
    images.files["/os.raw.xz"] = lzma.compress(data)
    checksum = hashlib.sha256(images.files["/os.raw.xz"]).hexdigest()
    disk = garbage_disk(tmp_path / "disk")
    workflow = api.get("/api/v1/workflows").json()
    token = enrol(api, template("os", f"{images.url}/os.raw.xz", disk, checksum))
    agent = build_zipapp(tmp_path / "agent.pyz")
    env = {"PATH": os.environ["PATH"], "METALFLOW_AGENT_TOKEN": token}
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            str(agent),
            "--url",
            live.url,
            "--mac",
            MAC,
            "--wait",
            "5",
            "--dry-run-power",
            "--cmdline",
            "/dev/null",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 60
    workflow = api.get("/api/v1/workflows").json()["items"][0]
    shown = api.get(f"/api/v1/workflows/{workflow['id']}").json()
    assert shown["state"] == "SUCCESS", shown
    stream, reboot = shown["actions"]
    assert [a["state"] for a in shown["actions"]] == ["SUCCESS", "SUCCESS"]
    tail = stream["journal"][0]["log_tail"]
    assert f"sha256 verified: {checksum}" in tail
    assert tail[0] == "running stream-image (image2disk, attempt 1)"
    assert "dry run: would reboot now" in reboot["journal"][0]["log_tail"]
    machine = api.get("/api/v1/machines/m1").json()
    assert machine["state"] == "provisioned"
    assert machine["attributes"]["arch"] and "disks" in machine["attributes"]
    written = disk.read_bytes()
    assert written[: len(data)] == data and written[-MIB:] == bytes(MIB)


def test_an_unknown_machine_discovers_itself_then_runs_its_workflow(
    settings: Settings, tmp_path: Path
) -> None:
    """No token: the agent registers the machine, waits for work, then runs it."""
    server = start_server(settings.model_copy(update={"discovery": True}))
    mac = "52:54:00:00:0d:99"
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(
        f"console=ttyS0 metalflow.url={server.url} metalflow.mac={mac} metalflow.discovery=1\n"
    )
    argv = [sys.executable, "-I", "-S", str(build_zipapp(tmp_path / "agent.pyz"))]
    argv += ["--wait", "2", "--dry-run-power", "--cmdline", str(cmdline)]
    agent = subprocess.Popen(argv, env={"PATH": os.environ["PATH"]}, stderr=subprocess.PIPE)
    name = "discovered-525400000d99"
    try:
        with server.client() as api:
            deadline = time.monotonic() + 60
            while api.get(f"/api/v1/machines/{name}").status_code != 200:
                assert agent.poll() is None, agent.stderr.read() if agent.stderr else ""
                assert time.monotonic() < deadline, "the agent did not register the machine"
                time.sleep(0.2)
            machine = api.get(f"/api/v1/machines/{name}").json()
            assert machine["state"] == "new"
            assert machine["interfaces"][0]["mac"] == mac
            reboot = {"name": "reboot", "image": "ghcr.io/tinkerbell/actions/reboot:latest"}
            assert apply(api, template_yaml("os", [reboot])).status_code == 200
            started = api.post(f"/api/v1/machines/{name}/provision", json={"template": "os"})
            assert started.status_code == 201, started.text
            assert agent.wait(timeout=60) == 0
            assert api.get(f"/api/v1/machines/{name}").json()["state"] == "provisioned"
            assert "arch" in api.get(f"/api/v1/machines/{name}").json()["attributes"]
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        server.stop()


def test_agent_reports_a_failed_image_and_the_workflow_fails(
    live: LiveServer, api: httpx.Client, images: Images, tmp_path: Path
) -> None:
    images.files["/os.raw.xz"] = lzma.compress(image_bytes(MIB))
    token = enrol(api, template("os", f"{images.url}/os.raw.xz", tmp_path / "absent", "0" * 64))
    stop = threading.Event()
    client = Client(live.url, token, stop=stop)
    runner = Runner(
        client,
        System(dry_run_power=True),
        attributes={"cpu": {}},
        mac=MAC,
        wait=1,
        log=lambda _m: None,
    )
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        shown = wait_for(api, lambda s: s["state"] == "FAILED")
    finally:
        stop.set()
        thread.join(timeout=20)
    assert not thread.is_alive()
    assert "DEST_DISK" in shown["reason"] and "does not exist" in shown["reason"]
    assert shown["actions"][0]["exit_code"] == 2
    assert api.get("/api/v1/machines/m1").json()["state"] == "failed"


def wait_for(api: httpx.Client, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        items = api.get("/api/v1/workflows").json()["items"]
        if items:
            shown: dict[str, Any] = api.get(f"/api/v1/workflows/{items[0]['id']}").json()
            if done(shown):
                return shown
        time.sleep(0.2)
    raise AssertionError("the workflow did not reach the expected state")


# --- the protocol client against scripted answers --------------------------------------------


def fast() -> Iterator[float]:
    while True:
        yield 0.01


def test_client_retries_5xx_and_returns_the_answer() -> None:
    answers: list[tuple[int, object]] = [(503, {"detail": "busy"}), (502, None)]
    with scripted(Script([*answers, (200, {"machine": "abc"})])) as script:
        client = Client(script.url, "mfa.x", retry_delays=fast)
        assert client.hello(MAC, {"cpu": {}}) == {"machine": "abc"}
    assert [s[1] for s in script.seen] == ["/api/v1/agent/hello"] * 3
    assert script.seen[0][2] == {"mac": MAC, "attributes": {"cpu": {}}, "agent_version": "1.0"}


def test_client_next_204_is_none_and_errors_are_clear() -> None:
    detail = {"detail": {"message": "token revoked", "field": None}}
    with scripted(Script([(204, None), (401, detail), (409, detail)])) as script:
        client = Client(script.url, "mfa.x", retry_delays=fast)
        assert client.next(wait=0) is None
        with pytest.raises(ProtocolError, match=r"HTTP 401: token revoked.*agent-token"):
            client.next(wait=0)
        with pytest.raises(Conflict):
            client.status(5, "success", exit_code=0)
    assert script.seen[0][1] == "/api/v1/agent/next?wait=0"


def test_final_report_survives_a_server_outage() -> None:
    with scripted(Script()) as probe:
        port = int(probe.url.rsplit(":", 1)[1])
    client = Client(f"http://127.0.0.1:{port}", "mfa.x", retry_delays=fast)
    result: list[dict[str, Any]] = []
    thread = threading.Thread(
        target=lambda: result.append(client.status(7, "success", exit_code=0)), daemon=True
    )
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive() and not result
    with scripted(Script([(500, None), (200, {"id": 7, "state": "SUCCESS"})]), port) as script:
        thread.join(timeout=10)
    assert result == [{"id": 7, "state": "SUCCESS"}]
    assert script.seen[-1] == (
        "POST",
        "/api/v1/agent/actions/7/status",
        {"status": "success", "exit_code": 0},
    )


def test_bounded_requests_give_up_and_stop_ends_retrying() -> None:
    client = Client("http://127.0.0.1:9", "mfa.x", retry_delays=fast)
    with pytest.raises(ConnectionError, match="POST /api/v1/agent/actions/1/logs"):
        client.logs(1, 0, ["x"], attempts=2)
    client.stop.set()
    with pytest.raises(Stopped):
        client.next(wait=0)


def copy_with_libraries(binary: str, root: Path) -> None:
    """A dynamically linked program and the libraries ldd names, at the same paths."""
    listing = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    paths = [binary] + [word for word in listing.split() if word.startswith("/")]
    for path in paths:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(path), target)


@pytest.mark.parametrize("loop_fs", [("ext4", "mkfs.ext4", "e2fsprogs")], indirect=True)
def test_cexec_in_a_chroot_on_a_loop_device(loop_fs: tuple[str, str], tmp_path: Path) -> None:
    device, fs_type = loop_fs
    busybox = needs_tool("busybox", "busybox")
    needs_tool("ldd", "libc-bin")
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["mount", "-t", fs_type, device, str(root)], check=True)
    try:
        copy_with_libraries(busybox, root)
        for name in ("dev", "proc", "sys"):
            (root / name).mkdir()
        (root / "bin").mkdir(exist_ok=True)
        os.symlink(busybox, root / "bin/sh")
    finally:
        subprocess.run(["umount", str(root)], check=True)
    env = {
        "BLOCK_DEVICE": device,
        "FS_TYPE": fs_type,
        "CHROOT": "y",
        "DEFAULT_INTERPRETER": "/bin/sh -c",
        "CMD_LINE": "echo inside; test -e /proc/self/status && echo proc; echo $((6*7)) > /x",
    }
    ctx, lines = ctx_for(env, "cexec")
    cexec(ctx)
    assert lines[-2:] == ["inside", "proc"]
    assert read_back(device, fs_type, "/x")[0] == "42\n"
    mounts = Path("/proc/mounts").read_text()
    assert "metalflow-mnt-" not in mounts, "every mount of the action is undone"


class Watched(Runner):
    """Keeps every action it was served."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.served: list[dict[str, Any]] = []

    def run_action(self, action: dict[str, Any]) -> bool:
        self.served.append(action)
        return super().run_action(action)


def test_agent_restarted_mid_action_continues_the_same_attempt(
    live: LiveServer, api: httpx.Client, images: Images, tmp_path: Path
) -> None:
    data = image_bytes(MIB)
    images.files["/os.raw.xz"] = lzma.compress(data)
    checksum = hashlib.sha256(images.files["/os.raw.xz"]).hexdigest()
    disk = garbage_disk(tmp_path / "disk", 4 * MIB)
    token = enrol(api, template("os", f"{images.url}/os.raw.xz", disk, checksum))
    with live.client(token) as before:
        first = before.get("/api/v1/agent/next").json()
        lines = ["before restart 0", "before restart 1"]
        logged = before.post(f"/api/v1/agent/actions/{first['id']}/logs", json={"lines": lines})
        assert logged.json() == {"received": 2}
    runner = Watched(
        Client(live.url, token),
        System(dry_run_power=True),
        attributes={},
        mac=MAC,
        wait=1,
        log=lambda _m: None,
    )
    assert runner.run() == 0
    assert runner.served[0]["id"] == first["id"] and runner.served[0]["log_seq"] == 2
    shown = api.get(f"/api/v1/workflows/{first['workflow']}").json()
    assert shown["state"] == "SUCCESS"
    [attempt] = shown["actions"][0]["journal"]
    assert attempt["log_tail"][:3] == [*lines, "running stream-image (image2disk, attempt 1)"]
    assert disk.read_bytes()[: len(data)] == data


def test_partition_then_format_a_disk_file(tmp_path: Path) -> None:
    sfdisk = needs_tool("sfdisk", "fdisk")
    needs_tool("mkfs.ext4", "e2fsprogs")
    disk = garbage_disk(tmp_path / "disk", 64 * MIB)
    layout = "size=16MiB, type=uefi, name=esp\ntype=linux, name=root\n"
    ctx, lines = ctx_for({"DEST_DISK": str(disk), "PARTITIONS": layout}, "partition")
    partition(ctx)
    table = json.loads(
        subprocess.run([sfdisk, "--json", str(disk)], capture_output=True, check=True).stdout
    )["partitiontable"]
    assert table["label"] == "gpt"
    assert [p.get("name") for p in table["partitions"]] == ["esp", "root"]
    assert table["partitions"][0]["size"] * table.get("sectorsize", 512) == 16 * MIB
    assert lines, "sfdisk's output is logged"

    part = garbage_disk(tmp_path / "part", 16 * MIB)
    ctx, _ = ctx_for({"DEST_DISK": str(part), "FS_TYPE": "ext4", "LABEL": "root"}, "format")
    format_(ctx)
    superblock = part.read_bytes()[1024:2048]
    assert superblock[56:58] == b"\x53\xef" and superblock[120:124] == b"root"


@pytest.mark.parametrize(
    ("action", "env", "match"),
    [
        (partition, {"DEST_DISK": "/dev/null"}, "PARTITIONS is not set"),
        (
            partition,
            {"DEST_DISK": "/dev/null", "PARTITIONS": "x", "LABEL": "mbr"},
            "LABEL='mbr' must be gpt or dos",
        ),
        (format_, {"DEST_DISK": "/dev/null", "FS_TYPE": "zfs"}, "FS_TYPE='zfs' is not supported"),
        (format_, {"DEST_DISK": "/nonexistent", "FS_TYPE": "ext4"}, "/nonexistent does not exist"),
    ],
)
def test_partition_and_format_bad_input(
    action: Callable[[Context], None], env: dict[str, str], match: str
) -> None:
    with pytest.raises(ActionError, match=match):
        action(ctx_for(env, "x")[0])
