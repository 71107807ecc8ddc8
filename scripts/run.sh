#!/usr/bin/env bash
# Install what metalflow needs (idempotent) and run `metalflow up` on embedded SQLite.
# Extra arguments are passed to `metalflow up`, e.g. --database postgresql://user@host/db.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# iPXE binaries served to PXE clients by `metalflow up --interface IFACE`.
mf_apt_ensure ipxe
mf_ensure_venv
mf_install_project base . test

mf_log "starting: metalflow up --data-dir ./metalflow-data --http 0.0.0.0:7080 $*"
exec "$MF_VENV/bin/metalflow" up --data-dir ./metalflow-data --http 0.0.0.0:7080 "$@"
