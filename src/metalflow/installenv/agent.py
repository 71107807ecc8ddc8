"""The agent as one zipapp: `metalflow/agent/**` plus an empty `metalflow/__init__.py`.

The real `metalflow/__init__.py` is left out on purpose: the agent imports nothing else from
metalflow, and an empty package file keeps it from trying. Entries are sorted and dated
1980-01-01, so equal sources give an equal archive (and an equal build input hash).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from metalflow.installenv.errors import InstallEnvError

MAIN = "from metalflow.agent.__main__ import main; raise SystemExit(main())\n"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def default_agent_dir() -> Path:
    """`metalflow/agent` beside this installed package (found without importing it)."""
    return Path(__file__).resolve().parent.parent / "agent"


def agent_files(agent_dir: Path) -> list[tuple[str, Path]]:
    """(archive name, file) for every file of the agent package, __pycache__ and .pyc left out."""
    if not (agent_dir / "__main__.py").is_file():
        raise InstallEnvError(
            f"no agent at {agent_dir}: {agent_dir / '__main__.py'} does not exist; install"
            " metalflow with its agent package (metalflow/agent/__main__.py defining main())"
        )
    files = []
    for path in sorted(agent_dir.rglob("*")):
        relative = path.relative_to(agent_dir)
        if path.is_file() and "__pycache__" not in relative.parts and path.suffix != ".pyc":
            files.append((f"metalflow/agent/{relative.as_posix()}", path))
    return files


def build_zipapp(agent_dir: Path) -> bytes:
    members = [("__main__.py", MAIN.encode()), ("metalflow/__init__.py", b"")]
    members += [(name, path.read_bytes()) for name, path in agent_files(agent_dir)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(members):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()
