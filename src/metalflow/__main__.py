"""`python -m metalflow`: the CLI, for processes started by metalflow itself (the sandbox)."""

from metalflow.cli import main

main()
