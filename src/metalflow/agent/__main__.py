"""``python -m metalflow.agent`` (or the zipapp): configure from flags, env and /proc/cmdline.

argparse, as everywhere in the stdlib-only agent.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from . import VERSION, hardware
from .client import Client, ProtocolError
from .cmdline import ConfigError, read_proc_cmdline, resolve
from .identity import DEFAULT_STATE_DIR, boot_key, is_boot_token
from .runner import Runner, stderr_log
from .system import System


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="metalflow-agent",
        description="Run this machine's metalflow workflow. Unset options come from"
        " METALFLOW_AGENT_URL/_TOKEN/_MAC/_MACHINE/_DISCOVERY, then from metalflow.url=,"
        " metalflow.token=, metalflow.mac=, metalflow.machine= and metalflow.discovery= on the"
        " kernel command line. Without a token, metalflow.discovery=1 registers this machine.",
    )
    p.add_argument("--url", help="metalflow server, e.g. http://192.0.2.1:8080")
    p.add_argument("--token", help="the machine's agent token (mfa....) or a boot token (mfb....)")
    p.add_argument("--mac", help="MAC of the interface metalflow knows this machine by")
    p.add_argument("--machine", help="machine name, for log lines only")
    p.add_argument("--cmdline", default="/proc/cmdline", help="kernel command line file")
    p.add_argument("--root", default="/", help="root of /proc and /sys for hardware facts")
    p.add_argument(
        "--state-dir",
        default=str(DEFAULT_STATE_DIR),
        help="where the key of this boot is kept (a tmpfs), so a restarted agent can exchange"
        " its boot token again",
    )
    p.add_argument("--wait", type=float, default=30.0, help="long-poll seconds (0-300)")
    p.add_argument(
        "--dry-run-power",
        action="store_true",
        help="log reboot, poweroff and kexec instead of doing them (for tests and trials)",
    )
    p.add_argument("--version", action="version", version=f"metalflow-agent {VERSION}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    flags = {"url": args.url, "token": args.token, "mac": args.mac, "machine": args.machine}
    try:
        config = resolve(flags, os.environ, read_proc_cmdline(args.cmdline))
    except ConfigError as error:
        print(f"metalflow-agent: {error}", file=sys.stderr)
        return 2
    if not 0 <= args.wait <= 300:
        print("metalflow-agent: --wait must be between 0 and 300 seconds", file=sys.stderr)
        return 2
    log = stderr_log(machine=config.machine, mac=config.mac)
    attributes = hardware.collect(Path(args.root))
    key = boot_key(Path(args.state_dir), log) if is_boot_token(config.token) else None
    client = Client(config.url, config.token, stop=threading.Event(), log=log, boot_key=key)
    mac = config.mac
    log(f"metalflow-agent {VERSION} talking to {config.url}")
    try:
        if not config.token:
            mac = mac or next(iter(hardware.macs_by_preference(attributes)), None)
            if mac is None:
                print("metalflow-agent: discovery needs a MAC: no NIC found", file=sys.stderr)
                return 2
            try:
                found = client.discover(mac, attributes)
            except ProtocolError as error:
                print(f"metalflow-agent: discovery refused: {error}", file=sys.stderr)
                return 2
            log(f"discovered as machine {found['machine']} ({found['state']})")
        runner = Runner(
            client,
            System(dry_run_power=args.dry_run_power),
            attributes=attributes,
            mac=mac,
            wait=args.wait,
            log=log,
        )
        return runner.run()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
