"""The initramfs's /init (busybox sh) and udhcpc's lease script, rendered by pure functions.

/init never exits: the kernel panics when PID 1 does. Any fatal error prints its reason and
starts a shell on the console instead, again whenever that shell exits. The agent runs as a child
of /init (not `exec`'d) for the same reason: if it ever returns, the operator gets a shell.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from metalflow.installenv import tools

AGENT_PATH = "/usr/lib/metalflow/agent.pyz"
UDHCPC_SCRIPT = "/usr/share/udhcpc/default.script"
PREFIX = "metalflow-init:"
SELFTEST_IMPORTS = (
    "json",
    "urllib.request",
    "http.client",
    "ssl",
    "hashlib",
    "gzip",
    "bz2",
    "lzma",
    "zlib",
    "subprocess",
    "threading",
    "zipfile",
    "shutil",
    "tempfile",
    "logging",
    "argparse",
    "platform",
    "struct",
    "ctypes",
    "socket",
    "select",
)
"""What `metalflow.selftest=1` imports: each needs a piece of the initramfs (ssl: libssl, ...)."""

BUSYBOX_APPLETS = (
    "sh",
    "ash",
    "awk",
    "blockdev",
    "cat",
    "chmod",
    "chroot",
    "cp",
    "cttyhack",
    "cut",
    "date",
    "dd",
    "df",
    "dmesg",
    "echo",
    "false",
    "grep",
    "gunzip",
    "gzip",
    "head",
    "hostname",
    "ifconfig",
    "insmod",
    "ip",
    "kill",
    "ln",
    "ls",
    "lsmod",
    "mkdir",
    "mknod",
    "modprobe",
    "mount",
    "mv",
    "nslookup",
    "ping",
    "poweroff",
    "ps",
    "reboot",
    "rm",
    "rmmod",
    "route",
    "sed",
    "setsid",
    "sleep",
    "sort",
    "sync",
    "tail",
    "tar",
    "tee",
    "test",
    "timeout",
    "touch",
    "tr",
    "true",
    "udhcpc",
    "umount",
    "uname",
    "unxz",
    "vi",
    "wget",
    "xz",
    "zcat",
    "[",
)
"""Links to /usr/bin/busybox (all present in Debian 12's busybox-static)."""


@dataclass(frozen=True)
class InitConfig:
    modules: Sequence[str]
    """Absolute paths of the .ko files, in load order."""
    dhcp_tries: int = 3
    dhcp_timeout: int = 4
    """Seconds udhcpc waits for each reply; it sends `dhcp_tries` discovers per round."""
    dhcp_rounds: int = 3


def render_functions(config: InitConfig) -> str:
    """The shell functions /init is made of; tests source them with the two paths redirected."""
    return f"""CMDLINE_FILE="${{METALFLOW_CMDLINE_FILE:-/proc/cmdline}}"
NET_DIR="${{METALFLOW_NET_DIR:-/sys/class/net}}"

say() {{ echo "{PREFIX} $*"; }}

rescue() {{
    say "FATAL: $*"
    say "dropping to a shell on /dev/console (exit it to get another)"
    while :; do
        setsid cttyhack sh -l || sh </dev/console >/dev/console 2>&1
        sleep 1
    done
}}

# cmdline_value KEY: the value of KEY=VALUE on the kernel command line (last one wins).
cmdline_value() {{
    value=""
    for word in $(cat "$CMDLINE_FILE" 2>/dev/null); do
        case "$word" in
            "$1"=*) value="${{word#*=}}" ;;
        esac
    done
    echo "$value"
}}

normalise_mac() {{ echo "$1" | tr 'A-F-' 'a-f:'; }}

mount_filesystems() {{
    mkdir -p /proc /sys /dev /run /tmp
    mount -t proc proc /proc || rescue "cannot mount /proc"
    mount -t sysfs sysfs /sys || rescue "cannot mount /sys"
    mount -t devtmpfs devtmpfs /dev || rescue "cannot mount /dev (devtmpfs)"
    mkdir -p /dev/pts /dev/shm
    mount -t devpts devpts /dev/pts
    mount -t tmpfs tmpfs /run
    mount -t tmpfs tmpfs /tmp
}}

# nics: interfaces with a MAC; only the one matching metalflow.mac if it is among them.
nics() {{
    wanted="$(normalise_mac "$(cmdline_value metalflow.mac)")"
    all=""
    for dev in "$NET_DIR"/*; do
        name="${{dev##*/}}"
        [ "$name" = lo ] && continue
        mac="$(cat "$dev/address" 2>/dev/null)"
        [ -n "$mac" ] && [ "$mac" != 00:00:00:00:00:00 ] || continue
        if [ -n "$wanted" ] && [ "$mac" = "$wanted" ]; then
            echo "$name"
            return
        fi
        all="$all $name"
    done
    echo $all
}}

network_up() {{
    ip link set lo up
    devices="$(nics)"
    if [ -z "$devices" ]; then
        say "no network interface with a MAC address"
        return 1
    fi
    round=1
    while [ "$round" -le {config.dhcp_rounds} ]; do
        for dev in $devices; do
            ip link set "$dev" up
            say "DHCP on $dev (round $round of {config.dhcp_rounds})"
            if udhcpc -i "$dev" -n -t {config.dhcp_tries} -T {config.dhcp_timeout} -A 2 \\
                -s {UDHCPC_SCRIPT} -x hostname:metalflow-installenv; then
                say "network up on $dev: $(ip -4 -o addr show dev "$dev" | awk '{{print $4}}')"
                return 0
            fi
        done
        round=$((round + 1))
    done
    say "no DHCP lease on: $devices"
    return 1
}}
"""


def render_init(config: InitConfig) -> str:
    modules = " ".join(shlex.quote(path) for path in config.modules)
    imports = ", ".join(SELFTEST_IMPORTS)
    selftest = shlex.quote(
        f"import sys, {imports}; cas = ssl.create_default_context().cert_store_stats()['x509_ca'];"
        f" print({PREFIX + ' python ok'!r}, sys.version.split()[0], f'({{cas}} CA certificates)',"
        " flush=True)"
    )
    agent_check = shlex.quote(
        f"import sys; sys.path.insert(0, {AGENT_PATH!r}); from metalflow.agent.__main__ import"
        f" main; print({PREFIX + ' agent ok'!r}, flush=True)"
    )
    return f"""#!/bin/sh
# metalflow install environment /init: generated by metalflow.installenv, do not edit.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
{render_functions(config)}
load_modules() {{
    for module in {modules}; do
        name="${{module##*/}}"
        if insmod "$module" 2>/tmp/insmod.err; then
            say "loaded ${{name%%.ko*}}"
        else
            say "warning: insmod $name: $(cat /tmp/insmod.err)"
        fi
    done
}}

mount_filesystems
exec </dev/console >/dev/console 2>&1
say "starting ($(uname -r))"
load_modules
selftest="$(cmdline_value metalflow.selftest)"
if ! network_up && [ "$selftest" != 1 ]; then
    rescue "network is not up; the agent needs it"
fi
if [ "$selftest" = 1 ]; then
    say "selftest"
    python3 -c {selftest} || say "selftest FAILED: python3 does not start"
    python3 -c {agent_check} || say "selftest FAILED: the agent does not import"
    for tool in {" ".join(shlex.quote(c) for c in tools.selftest_commands())}; do
        $tool >/dev/null 2>&1
        status=$?
        [ "$status" -lt 126 ] || say "selftest FAILED: $tool exits $status (missing library?)"
    done
    say "tools checked"
    say "selftest done, powering off"
    sync
    poweroff -f
    rescue "poweroff failed"
fi
[ -f {AGENT_PATH} ] || rescue "{AGENT_PATH} is missing"
say "starting the agent"
python3 {AGENT_PATH}
rescue "the agent exited with status $?"
"""


def render_udhcpc_script(lease_file: str | None = None) -> str:
    """busybox udhcpc's lease hook: address, routes and resolv.conf from the DHCP reply.

    With `lease_file`, each lease also leaves `LEASE_IP='...'` and `LEASE_SERVER='...'` (the DHCP
    server id) there, as shell assignments for a script to source.
    """
    record = (
        ""
        if lease_file is None
        else '        printf "LEASE_IP=\'%s\'\\nLEASE_SERVER=\'%s\'\\n" "$ip" "$serverid"'
        f" >{shlex.quote(lease_file)}\n"
    )
    return (
        """#!/bin/sh
# udhcpc lease hook of the metalflow install environment (generated).
RESOLV_CONF="${RESOLV_CONF:-/etc/resolv.conf}"
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip -4 addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
        [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
        if [ -n "$staticroutes" ]; then
            set -- $staticroutes
            while [ $# -ge 2 ]; do
                ip -4 route replace "$1" via "$2" dev "$interface"
                shift 2
            done
        fi
        metric=0
        for gateway in $router; do
            ip -4 route add default via "$gateway" dev "$interface" metric "$metric"
            metric=$((metric + 1))
        done
        : >"$RESOLV_CONF"
        [ -n "$domain" ] && echo "search $domain" >>"$RESOLV_CONF"
        for server in $dns; do
            echo "nameserver $server" >>"$RESOLV_CONF"
        done
"""
        + record
        + """        ;;
    leasefail|nak)
        echo "udhcpc: $1 on $interface" >&2
        ;;
esac
exit 0
"""
    )
