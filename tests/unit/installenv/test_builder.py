"""The build inputs: unchanged ones reuse the outputs, any change means a rebuild (apt faked)."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from metalflow.installenv import BuildResult, Compression, agent, build, builder, debs
from metalflow.installenv.builder import builder_digest, inputs_digest

PACKAGES = {"busybox-static": "1:1.35.0-4", "libc6": "2.36-9"}


def test_equal_inputs_give_equal_digests() -> None:
    assert inputs_digest(PACKAGES, b"zip", Compression.GZIP, "b1") == inputs_digest(
        dict(reversed(PACKAGES.items())), b"zip", Compression.GZIP, "b1"
    )


def test_each_input_changes_the_digest() -> None:
    base = inputs_digest(PACKAGES, b"zip", Compression.GZIP, "b1")
    variants = [
        inputs_digest({**PACKAGES, "libc6": "2.36-10"}, b"zip", Compression.GZIP, "b1"),
        inputs_digest({**PACKAGES, "zlib1g": "1"}, b"zip", Compression.GZIP, "b1"),
        inputs_digest(PACKAGES, b"zip2", Compression.GZIP, "b1"),
        inputs_digest(PACKAGES, b"zip", Compression.XZ, "b1"),
        inputs_digest(PACKAGES, b"zip", Compression.GZIP, "b2"),
    ]
    assert len({base, *variants}) == len(variants) + 1


def copy_of_the_builder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The installenv sources in a directory of their own, read by builder_digest from there."""
    copy = tmp_path / "installenv"
    shutil.copytree(Path(builder.__file__).parent, copy)
    monkeypatch.setattr(builder, "__file__", str(copy / "builder.py"))
    return copy


def test_the_same_builder_source_anywhere_gives_the_same_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = builder_digest()
    copy_of_the_builder(tmp_path, monkeypatch)
    assert builder_digest() == installed
    assert re.fullmatch(r"[0-9a-f]{64}", installed)


@pytest.mark.parametrize("edit", ["one byte of builder.py", "a new module", "a renamed module"])
def test_an_edited_builder_changes_the_digest(
    edit: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = builder_digest()
    copy = copy_of_the_builder(tmp_path, monkeypatch)
    if edit == "one byte of builder.py":
        source = (copy / "builder.py").read_bytes()
        (copy / "builder.py").write_bytes(source.replace(b"rebuild", b"Rebuild", 1))
    elif edit == "a new module":
        (copy / "extra.py").write_text("")
    else:
        (copy / "cpio.py").rename(copy / "cpio2.py")
    assert builder_digest() != installed


def test_files_other_than_python_sources_leave_the_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = builder_digest()
    copy = copy_of_the_builder(tmp_path, monkeypatch)
    (copy / "notes.txt").write_text("not part of the builder")
    assert builder_digest() == installed


class Rebuilt(Exception):
    """Raised instead of fetching packages: the builder decided to rebuild."""


def fake_apt(monkeypatch: pytest.MonkeyPatch, versions: dict[str, str]) -> None:
    def show(names: list[str], arch: debs.Arch) -> dict[str, dict[str, str]]:
        return {n: {"Package": n, "Version": versions[n]} for n in names if n in versions}

    def fetch(*args: object) -> dict[str, str]:
        raise Rebuilt

    monkeypatch.setattr(debs, "check_arch_available", lambda arch: None)
    monkeypatch.setattr(debs, "show", show)
    monkeypatch.setattr(builder, "_fetch", fetch)


def previous_build(data_dir: Path, agent_dir: Path) -> BuildResult:
    """Outputs and a stamp as a finished build leaves them."""
    out_dir = data_dir / "installenv" / "x86_64-cloud"
    out_dir.mkdir(parents=True)
    (out_dir / "vmlinuz").write_bytes(b"k")
    (out_dir / "initrd.img").write_bytes(b"i")
    packages = {"linux-image-6.1.0-57-cloud-amd64": "6.1.192-3", "libc6": "2.36-9"}
    result = BuildResult(
        kernel_path=out_dir / "vmlinuz",
        initrd_path=out_dir / "initrd.img",
        size_bytes=1,
        kernel_bytes=1,
        kernel_version="6.1.0-57-cloud-amd64",
        packages=packages,
        modules=("virtio",),
        compression=Compression.GZIP,
        inputs=inputs_digest(
            packages, agent.build_zipapp(agent_dir), Compression.GZIP, builder_digest()
        ),
    )
    stamp = {**asdict(result), "kernel_path": "vmlinuz", "initrd_path": "initrd.img"}
    (out_dir / "build.json").write_text(json.dumps(stamp))
    return result


APT = {
    "linux-image-cloud-amd64": "6.1.192-3",
    "linux-image-6.1.0-57-cloud-amd64": "6.1.192-3",
    "libc6": "2.36-9",
}


@pytest.fixture
def agent_dir(tmp_path: Path) -> Path:
    package = tmp_path / "agent"
    package.mkdir()
    (package / "__main__.py").write_text("def main() -> int:\n    return 0\n")
    return package


@pytest.fixture(autouse=True)
def kernel_depends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        debs, "real_kernel_package", lambda depends, meta: "linux-image-6.1.0-57-cloud-amd64"
    )


def test_unchanged_inputs_reuse_the_outputs(
    tmp_path: Path, agent_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_apt(monkeypatch, APT)
    previous = previous_build(tmp_path / "data", agent_dir)
    result = build(tmp_path / "data", agent_package=agent_dir)
    assert result.cached
    assert result.inputs == previous.inputs
    assert result.initrd_path == previous.initrd_path


@pytest.mark.parametrize(
    "change",
    ["new libc6", "libc6 gone from apt", "new kernel ABI", "agent", "force", "xz", "no initrd"],
)
def test_any_changed_input_rebuilds(
    change: str, tmp_path: Path, agent_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apt = dict(APT)
    previous = previous_build(tmp_path / "data", agent_dir)
    options: dict[str, Any] = {}
    if change == "new libc6":
        apt["libc6"] = "2.36-10"
    elif change == "libc6 gone from apt":
        del apt["libc6"]
    elif change == "new kernel ABI":
        monkeypatch.setattr(debs, "real_kernel_package", lambda d, m: "linux-image-6.1.0-58-cloud")
    elif change == "agent":
        (agent_dir / "extra.py").write_text("")
    elif change == "force":
        options["force"] = True
    elif change == "xz":
        options["compression"] = Compression.XZ
    else:
        previous.initrd_path.unlink()
    fake_apt(monkeypatch, apt)
    with pytest.raises(Rebuilt):
        build(tmp_path / "data", agent_package=agent_dir, **options)
