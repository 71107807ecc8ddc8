"""Network boot: DHCP, TFTP, iPXE scripts and boot assets, answered from an in-memory index."""
