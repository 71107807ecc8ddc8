"""The machine agent: runs in the install environment and drives one machine's workflow.

Python standard library only (zstd images go through the zstd program), and no import from
the rest of metalflow, so it runs from a zipapp holding just ``metalflow/agent``.
"""

VERSION = "1.0"
