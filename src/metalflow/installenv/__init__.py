"""Builds the install environment: the kernel and initramfs metalflow's iPXE script boots.

Everything comes from Debian packages (`apt-get download` + `dpkg-deb -x`, never installed), and
the initramfs is written by Python, so a build needs no root.
"""

from metalflow.installenv.builder import BuildResult, Compression, build, built
from metalflow.installenv.errors import InstallEnvError

__all__ = ["BuildResult", "Compression", "InstallEnvError", "build", "built"]
