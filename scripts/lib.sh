# Shared helpers for scripts/run.sh and scripts/test.sh. Source it; do not run it.
# Callers set `set -euo pipefail` and cd to the repo root before using these.

MF_VENV=".venv"
MF_APT_UPDATED=0

mf_log() { printf '==> %s\n' "$*" >&2; }
mf_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run a command as root: directly if we are root, else through sudo.
mf_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        mf_die "need root to run '$*' (run as root or install sudo)"
    fi
}

mf_pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# mf_apt_ensure PKG...: install the packages that are missing; apt-get update at most once.
mf_apt_ensure() {
    local missing=() pkg
    for pkg in "$@"; do
        mf_pkg_installed "$pkg" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 \
        || mf_die "missing packages (${missing[*]}) and no apt-get; install them by hand"
    mf_log "installing: ${missing[*]}"
    if [ "$MF_APT_UPDATED" -eq 0 ]; then
        mf_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        MF_APT_UPDATED=1
    fi
    mf_as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# True if "$1" is a Python >= 3.11 that can create venvs with pip.
mf_python_ok() {
    "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

# Prints the interpreter used to create the venv; installs Debian's python3 if needed.
mf_find_python() {
    local py
    py="$(command -v python3 || true)"
    if [ -n "$py" ] && mf_python_ok "$py"; then
        echo "$py"
        return 0
    fi
    mf_apt_ensure python3 python3-venv python3-pip
    mf_python_ok /usr/bin/python3 \
        || mf_die "/usr/bin/python3 is not Python >= 3.11 with venv (metalflow needs >= 3.11)"
    echo /usr/bin/python3
}

# Create .venv if missing; recreate it if its interpreter or pip is broken.
mf_ensure_venv() {
    if [ -d "$MF_VENV" ]; then
        if "$MF_VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            >/dev/null 2>&1 \
            && "$MF_VENV/bin/python" -m pip --version >/dev/null 2>&1; then
            return 0
        fi
        mf_log "$MF_VENV is broken; recreating it"
        rm -rf "$MF_VENV"
    fi
    local py
    py="$(mf_find_python)"
    mf_log "creating $MF_VENV with $py ($("$py" --version 2>&1))"
    "$py" -m venv "$MF_VENV"
}

mf_pyproject_hash() {
    sha256sum pyproject.toml | cut -d' ' -f1
}

# mf_install_project NAME SPEC [SATISFIED_BY...]
#   pip install -e SPEC unless a stamp .venv/.metalflow-install-{NAME,SATISFIED_BY...}
#   holds the current pyproject.toml hash (e.g. the "test" install also satisfies "base").
mf_install_project() {
    local name="$1" spec="$2" hash stamp
    shift 2
    hash="$(mf_pyproject_hash)"
    for stamp in "$name" "$@"; do
        stamp="$MF_VENV/.metalflow-install-$stamp"
        if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ] && [ -x "$MF_VENV/bin/metalflow" ]; then
            return 0
        fi
    done
    mf_log "pip install -e '$spec' (pyproject.toml changed or first install)"
    "$MF_VENV/bin/python" -m pip install --disable-pip-version-check -q -e "$spec"
    echo "$hash" >"$MF_VENV/.metalflow-install-$name"
}
