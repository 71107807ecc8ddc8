"""What metalflow answers to a DHCP request, as a value: Reply, Ignore (with a reason) or Release.

Pure: no sockets, no clock, no database. The server decodes, looks the MAC up in the in-memory
index, asks `pool_lookup` which pool address to fetch from the lease store, then applies and
sends whatever these functions return (committing `Reply.lease` first). Two policies share one
shape: `answer_reservation` (full DHCP) and `answer_proxy` (ProxyDHCP, PXE spec 2.1 §2.5). By
concern: `clients` (classification and every refusal), `bootfile`, `reply` (values, options,
size and destination), `reservation`, `proxy`. The values are slotted dataclasses, not frozen
ones, for the reason `DhcpPacket` gives.
"""

from metalflow.boot.dhcp.policy.bootfile import BootChoice, BootSettings, choose_bootfile
from metalflow.boot.dhcp.policy.clients import (
    BOOT_REFUSALS,
    HTTP_CLIENT,
    IPXE_USER_CLASS,
    PXE_CLIENT,
    Arch,
    ClientInfo,
    boot_refusal,
    classify,
)
from metalflow.boot.dhcp.policy.proxy import answer_proxy
from metalflow.boot.dhcp.policy.reply import (
    BROADCAST,
    CLIENT_PORT,
    INFINITE_LEASE,
    IP_UDP_HEADERS,
    MIN_MESSAGE_SIZE,
    SERVER_PORT,
    Decision,
    Ignore,
    LeaseCommit,
    Release,
    Reply,
    reply_destination,
    reply_to,
    select_network,
)
from metalflow.boot.dhcp.policy.reservation import (
    PoolLookup,
    answer_reservation,
    own_interface,
    pool_lookup,
)

__all__ = [
    "BOOT_REFUSALS",
    "BROADCAST",
    "CLIENT_PORT",
    "HTTP_CLIENT",
    "INFINITE_LEASE",
    "IPXE_USER_CLASS",
    "IP_UDP_HEADERS",
    "MIN_MESSAGE_SIZE",
    "PXE_CLIENT",
    "SERVER_PORT",
    "Arch",
    "BootChoice",
    "BootSettings",
    "ClientInfo",
    "Decision",
    "Ignore",
    "LeaseCommit",
    "PoolLookup",
    "Release",
    "Reply",
    "answer_proxy",
    "answer_reservation",
    "boot_refusal",
    "choose_bootfile",
    "classify",
    "own_interface",
    "pool_lookup",
    "reply_destination",
    "reply_to",
    "select_network",
]
