"""100,000 random and mutated datagrams through decode, classify and both policies.

Seeded, so a failure names a datagram that fails again. Hypothesis explores shapes; this
covers volume, the way the server meets the wire.
"""

from __future__ import annotations

import random

from metalflow.boot.dhcp.codec import MalformedPacket, decode
from metalflow.boot.dhcp.policy import answer_proxy, answer_reservation, classify
from tests.unit.boot.dhcp import captures
from tests.unit.boot.dhcp.strategies import ADDRESSES, NETWORKS, SETTINGS_CHOICES
from tests.unit.boot.dhcp.testbed import SERVER, machine

DATAGRAMS = 100_000
SEEDS = (
    captures.IPXE_BIOS_DISCOVER,
    captures.INTEL_PXE_BIOS_DISCOVER,
    captures.EDK2_UEFI_X64_DISCOVER,
    captures.EDK2_ARM64_DISCOVER,
    captures.EDK2_HTTP_DISCOVER,
    captures.RELAYED_REQUEST,
    captures.DHCLIENT_INIT_REBOOT,
)
OPTIONS_START = 240
MACHINES = (
    None,
    machine(),
    machine(workflow=False),
    machine(allow_pxe=False),
    machine("52:54:00:ab:cd:ef", ip="10.20.0.5"),
    machine(ip=None, hostname="nœud"),
)


def mutate(rng: random.Random, wire: bytes) -> bytes:
    """Damage a capture a few times, mostly in its options where parsing decisions are."""
    data = bytearray(wire)
    for _ in range(rng.randint(1, 3)):
        action = rng.random()
        position = rng.randrange(OPTIONS_START, len(data)) if len(data) > OPTIONS_START else 0
        if action < 0.1:
            position = rng.randrange(len(data))
        if action < 0.5:
            data[position] = rng.randrange(256)
        elif action < 0.65:
            del data[rng.randrange(OPTIONS_START - 2, len(data) + 1) :]
        elif action < 0.8:
            data[position:position] = rng.randbytes(rng.randint(1, 40))
        elif action < 0.9:
            data[position:position] = bytes((rng.randrange(1, 255), rng.randrange(256)))
        else:
            data[position : position + 2] = bytes((rng.choice((52, 53, 61, 82, 93, 97)), 1))
    return bytes(data)


def test_a_hundred_thousand_datagrams_raise_nothing_but_malformed_packet() -> None:
    rng = random.Random(20261201)
    answered = 0
    for index in range(DATAGRAMS):
        if index % 5 == 0:
            datagram = rng.randbytes(rng.randint(0, 600))
        else:
            datagram = mutate(rng, rng.choice(SEEDS))
        try:
            packet = decode(datagram)
        except MalformedPacket:
            continue
        try:
            info = classify(packet)
            known = rng.choice(MACHINES)
            network = rng.choice(NETWORKS)
            settings = rng.choice(SETTINGS_CHOICES)
            pool = rng.choice(ADDRESSES)
            answer_reservation(packet, info, network, SERVER, known, pool, settings)
            answer_proxy(
                packet,
                info,
                network,
                SERVER,
                known,
                settings,
                on_port_4011=rng.random() < 0.5,
                source=("192.0.2.50", 68),
            )
        except Exception as exc:
            raise AssertionError(f"datagram {index} raised: {datagram.hex()}") from exc
        answered += 1
    assert answered > DATAGRAMS // 4, "too few datagrams decoded to exercise the policies"
