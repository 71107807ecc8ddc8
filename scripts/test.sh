#!/usr/bin/env bash
# Install what metalflow's tests need (idempotent), start a throwaway PostgreSQL cluster,
# run pytest against it and remove the cluster again. Arguments go to pytest (default: the whole
# suite in parallel, slowest 25 tests listed).
# Exit code: pytest's, except "no tests collected" (5) becomes a failure (1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# --- packages, venv, project ------------------------------------------------------------
# Debian's postgresql package creates and starts a "main" cluster unless told not to; the tests
# only need the server binaries, so switch that off before the server package arrives.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    mf_apt_ensure postgresql-common
    mf_as_root sed -i 's/^#* *create_main_cluster *=.*/create_main_cluster = false/' \
        /etc/postgresql-common/createcluster.conf
    mf_apt_ensure postgresql
fi
# Real clients and peers for the boot-service tests (DHCP, TFTP, router discovery, QEMU's iPXE ROM).
mf_apt_ensure iproute2 isc-dhcp-client udhcpc busybox dnsmasq-base atftp tftp-hpa curl \
    ipxe qemu-system-x86 ipxe-qemu ndisc6
# cloud-init is the real client of the metadata service tests; it is switched off for this host
# (the marker first, so that an install on a systemd machine never runs it at boot).
mf_as_root mkdir -p /etc/cloud
mf_as_root touch /etc/cloud/cloud-init.disabled
mf_apt_ensure cloud-init
# The BMC emulators the power drivers are tested against (sushy-tools' Redfish one is from PyPI).
mf_apt_ensure openipmi ipmitool
# The agent's disk actions, the install environment's cpio and readelf cross-checks, the e2e
# test OS image (FAT partition without mounting; syslinux/systemd-boot come as .debs), OVMF.
mf_apt_ensure cpio zstd dosfstools mtools fdisk e2fsprogs util-linux ovmf binutils
# Both are built from .debs that `apt-get download` fetches: it needs the package lists.
ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 || mf_as_root apt-get update -q >&2
mf_ensure_venv
mf_install_project test '.[test]'

PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] \
    || mf_die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"

# --- throwaway cluster ------------------------------------------------------------------
# PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres system user.
PG_RUN=()
if [ "$(id -u)" -eq 0 ]; then
    PG_OWNER=postgres
    if ! id -u "$PG_OWNER" >/dev/null 2>&1; then
        PG_OWNER=metalflow-pg
        id -u "$PG_OWNER" >/dev/null 2>&1 \
            || useradd --system --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin "$PG_OWNER"
    fi
    PG_RUN=(runuser -u "$PG_OWNER" --)
fi

PG_TMP=""
PG_DATA=""
pg_run() { (cd "$PG_TMP" && "${PG_RUN[@]}" "$@"); }

pg_cleanup() {
    [ -n "$PG_TMP" ] && [ -d "$PG_TMP" ] || return 0
    if [ -f "$PG_DATA/postmaster.pid" ]; then
        if ! pg_run "$PG_BIN/pg_ctl" -D "$PG_DATA" stop -m immediate -w >/dev/null 2>&1; then
            # Last resort: the postmaster of *this* data directory only.
            local pid
            pid="$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)"
            [[ "$pid" =~ ^[0-9]+$ ]] && kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -rf "$PG_TMP"
    PG_TMP=""
}
# On INT/TERM, pass the signal on to pytest (if running) and let it finish before cleanup.
PYTEST_PID=""
on_signal() {
    if [ -n "$PYTEST_PID" ]; then
        kill -"$1" "$PYTEST_PID" 2>/dev/null || true
        wait "$PYTEST_PID" 2>/dev/null || true
    fi
    exit "$2"
}
trap pg_cleanup EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM

tmp_base="${TMPDIR:-/tmp}"
[ "${#tmp_base}" -le 60 ] || tmp_base=/tmp   # unix socket paths are limited to ~107 bytes
PG_TMP="$(mktemp -d "$tmp_base/metalflow-pg.XXXXXX")"
PG_DATA="$PG_TMP/data"
[ "${#PG_RUN[@]}" -eq 0 ] || chown "$PG_OWNER:" "$PG_TMP"

pg_run "$PG_BIN/initdb" -D "$PG_DATA" -U metalflow --auth=trust -E UTF8 --locale=C \
    --no-sync >"$PG_TMP/initdb.log" 2>&1 \
    || { cat "$PG_TMP/initdb.log" >&2; mf_die "initdb failed"; }

free_port() {
    "$MF_VENV/bin/python" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

PG_PORT=""
for _attempt in 1 2 3; do
    port="$(free_port)"
    if pg_run "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_TMP/postgres.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$PG_TMP \
            -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
            -c max_connections=300" >/dev/null 2>&1; then
        PG_PORT="$port"
        break
    fi
    mf_log "PostgreSQL did not start on port $port; retrying"
done
if [ -z "$PG_PORT" ]; then
    tail -n 30 "$PG_TMP/postgres.log" >&2 || true
    mf_die "could not start the throwaway PostgreSQL (log above)"
fi

"$PG_BIN/createdb" -h "$PG_TMP" -p "$PG_PORT" -U metalflow metalflow_test
mf_log "$("$PG_BIN/psql" -X -h "$PG_TMP" -p "$PG_PORT" -U metalflow -d metalflow_test -Atc \
    'select version()')"

export METALFLOW_TEST_DATABASE_URL="postgresql://metalflow@127.0.0.1:$PG_PORT/metalflow_test"
mf_log "throwaway PostgreSQL at $METALFLOW_TEST_DATABASE_URL (data in $PG_DATA)"

# --- tests --------------------------------------------------------------------------------
# The whole suite runs on pytest-xdist workers, one per core (at most 4). Each worker has its own
# database on this server (tests/integration/conftest.py); --dist loadgroup keeps the tests of
# an xdist_group on one worker, so the e2e tests boot one VM at a time. Given arguments (one
# file, -k, --pdb) go to pytest unchanged, in this process.
args=("$@")
if [ "${#args[@]}" -eq 0 ]; then
    workers="$(nproc 2>/dev/null || echo 1)"
    [ "$workers" -le 4 ] || workers=4
    args=(-q -n "$workers" --dist loadgroup --durations=25)
fi

# pytest runs as a child we wait for, so a signal to this script reaches the trap at once.
# Bash starts background commands with SIGINT ignored and stdin on /dev/null: restore the
# KeyboardInterrupt handler (Ctrl-C) and keep stdin (`<&0`, e.g. for --pdb).
"$MF_VENV/bin/python" -c 'import signal, sys, pytest
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.exit(pytest.main())' "${args[@]}" <&0 &
PYTEST_PID=$!
set +e
wait "$PYTEST_PID"
rc=$?
set -e
PYTEST_PID=""

if [ "$rc" -eq 5 ]; then
    printf 'error: pytest collected no tests; a run that runs no test is a failure\n' >&2
    rc=1
fi
exit "$rc"
