#!/usr/bin/env bash
# Install what metalflow needs (idempotent) and run `metalflow up` on embedded SQLite.
# Extra arguments are passed to `metalflow up`, e.g. --database postgresql://user@host/db.
# `run.sh sandbox [ARGS]` instead provisions QEMU VMs end to end (`metalflow sandbox ARGS`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# iPXE binaries served to PXE clients by `metalflow up --interface IFACE`.
mf_apt_ensure ipxe
MF_SANDBOX=0
if [ "${1:-}" = sandbox ]; then
    shift
    MF_SANDBOX=1
    # The sandbox's VMs (QEMU, its iPXE ROM, OVMF), its network namespace, and the tools the
    # test OS image is built with; both images are built from .debs: apt needs its lists.
    mf_apt_ensure iproute2 qemu-system-x86 ipxe-qemu ovmf zstd dosfstools mtools fdisk
    ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 || mf_as_root apt-get update -q >&2
fi
mf_ensure_venv
mf_install_project base . test
if [ "$MF_SANDBOX" = 1 ]; then
    mf_log "starting: metalflow --data-dir ./metalflow-data sandbox $*"
    exec_root=()
    [ "$(id -u)" -eq 0 ] || exec_root=(sudo)
    exec "${exec_root[@]}" "$MF_VENV/bin/metalflow" --data-dir ./metalflow-data sandbox "$@"
fi

mf_log "starting: metalflow up --data-dir ./metalflow-data --http 0.0.0.0:7080 $*"
exec "$MF_VENV/bin/metalflow" up --data-dir ./metalflow-data --http 0.0.0.0:7080 "$@"
