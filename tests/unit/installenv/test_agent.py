"""The agent zipapp: layout, determinism, and that Python runs it."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from metalflow.installenv import agent
from metalflow.installenv.errors import InstallEnvError


def stand_in(tmp_path: Path) -> Path:
    """A minimal `metalflow/agent` package, standing in for the real one."""
    package = tmp_path / "agent"
    (package / "actions").mkdir(parents=True)
    (package / "__pycache__").mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(
        "import sys\nfrom metalflow.agent.actions import NAME\n\n"
        "def main() -> int:\n    print('agent', NAME, sys.argv[1:])\n    return 3\n"
    )
    (package / "actions" / "__init__.py").write_text("NAME = 'stand-in'\n")
    (package / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    (package / "stale.pyc").write_bytes(b"junk")
    return package


def test_layout(tmp_path: Path) -> None:
    data = agent.build_zipapp(stand_in(tmp_path))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == [
            "__main__.py",
            "metalflow/__init__.py",
            "metalflow/agent/__init__.py",
            "metalflow/agent/__main__.py",
            "metalflow/agent/actions/__init__.py",
        ]
        assert archive.read("metalflow/__init__.py") == b""
        assert archive.read("__main__.py").decode() == agent.MAIN


def test_equal_sources_give_equal_bytes(tmp_path: Path) -> None:
    package = stand_in(tmp_path)
    first = agent.build_zipapp(package)
    (package / "__main__.py").touch()
    assert agent.build_zipapp(package) == first
    (package / "extra.py").write_text("")
    assert agent.build_zipapp(package) != first


def test_python_runs_the_zipapp(tmp_path: Path) -> None:
    pyz = tmp_path / "agent.pyz"
    pyz.write_bytes(agent.build_zipapp(stand_in(tmp_path)))
    proc = subprocess.run(
        [sys.executable, "-I", str(pyz), "x"], capture_output=True, text=True, timeout=60
    )
    assert proc.stdout == "agent stand-in ['x']\n"
    assert proc.returncode == 3


def test_with_bytecode_python_imports_the_pyc_and_tracebacks_name_the_machine_path(
    tmp_path: Path,
) -> None:
    package = stand_in(tmp_path)
    (package / "actions" / "__init__.py").write_text("NAME = 'stand-in'\n1 / 0\n")
    pyz = tmp_path / "agent.pyz"
    pyz.write_bytes(agent.build_zipapp(package, bytecode_under="/usr/lib/metalflow/agent.pyz"))
    with zipfile.ZipFile(pyz) as archive:
        compiled = [name for name in archive.namelist() if name.endswith(".pyc")]
    assert compiled == [
        "metalflow/__init__.pyc",
        "metalflow/agent/__init__.pyc",
        "metalflow/agent/__main__.pyc",
        "metalflow/agent/actions/__init__.pyc",
    ]
    proc = subprocess.run([sys.executable, "-I", str(pyz)], capture_output=True, text=True)
    assert 'File "/usr/lib/metalflow/agent.pyz/metalflow/agent/actions/__init__.py"' in proc.stderr
    assert "ZeroDivisionError" in proc.stderr


def test_a_package_without_main_is_refused(tmp_path: Path) -> None:
    (tmp_path / "agent").mkdir()
    with pytest.raises(InstallEnvError, match=r"__main__.py does not exist"):
        agent.build_zipapp(tmp_path / "agent")


def test_default_agent_dir_is_beside_the_installenv_package() -> None:
    assert agent.default_agent_dir().parts[-2:] == ("metalflow", "agent")
