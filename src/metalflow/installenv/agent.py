"""The agent as one zipapp: `metalflow/agent/**` plus an empty `metalflow/__init__.py`.

The real `metalflow/__init__.py` is left out on purpose: the agent imports nothing else from
metalflow, and an empty package file keeps it from trying. Entries are sorted and dated
1980-01-01, so equal sources give an equal archive (and an equal build input hash).

The archive the initramfs gets also holds each module's bytecode (unchecked-hash .pyc beside the
.py, which zipimport prefers): compiling the agent's sources at every boot cost ~1.5 s under
emulation. The bytecode is not byte-stable across builder processes, so the build's input hash
is taken of the source-only archive.
"""

from __future__ import annotations

import io
import py_compile
import tempfile
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


def build_zipapp(agent_dir: Path, *, bytecode_under: str | None = None) -> bytes:
    """With `bytecode_under` (the zipapp's path on the machine, for tracebacks), each .py of
    the agent gets its .pyc too."""
    members = [("__main__.py", MAIN.encode()), ("metalflow/__init__.py", b"")]
    members += [(name, path.read_bytes()) for name, path in agent_files(agent_dir)]
    if bytecode_under is not None:
        members += _bytecode(members, bytecode_under)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(members):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def _bytecode(members: list[tuple[str, bytes]], under: str) -> list[tuple[str, bytes]]:
    compiled = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, data in members:
            if not name.endswith(".py") or name == "__main__.py":
                continue
            source, target = Path(scratch, "source.py"), Path(scratch, "out.pyc")
            source.write_bytes(data)
            py_compile.compile(
                str(source),
                cfile=str(target),
                dfile=f"{under}/{name}",
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
            compiled.append((name[:-3] + ".pyc", target.read_bytes()))
    return compiled
