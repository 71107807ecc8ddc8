"""The pure protocol cores load without a database driver, an async framework or a web stack."""

from __future__ import annotations

import json
import subprocess
import sys

PURE = ("metalflow.boot.dhcp.policy", "metalflow.boot.ipxe", "metalflow.boot.tftp.session")
IO_LIBRARIES = ("sqlalchemy", "psycopg", "anyio", "fastapi")
PROBE = f"""
import json, sys
for name in {PURE!r}:
    __import__(name)
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({IO_LIBRARIES!r}))))
"""


def test_pure_cores_import_no_io_library() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout) == []
