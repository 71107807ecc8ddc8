"""The agent runs from a zipapp holding only metalflow/agent: it may import the standard
library and itself, nothing else."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import metalflow.agent

AGENT = Path(metalflow.agent.__file__).parent
ALLOWED = set(sys.stdlib_module_names)


def test_agent_imports_only_stdlib_and_itself() -> None:
    offending = []
    for path in sorted(AGENT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] not in ALLOWED | {"__future__"}:
                    offending.append(f"{path.relative_to(AGENT)}: {name}")
    assert offending == []


def test_entry_point_contract() -> None:
    text = (AGENT / "__main__.py").read_text()
    assert "def main(argv: list[str] | None = None) -> int:" in text
    assert text.rstrip().endswith('if __name__ == "__main__":\n    raise SystemExit(main())')
