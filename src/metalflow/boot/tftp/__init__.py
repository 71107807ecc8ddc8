"""TFTP, read-only: the first hop of a network boot, which PXE ROMs can only take over TFTP."""
