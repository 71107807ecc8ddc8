"""Requests as real clients put them on the wire, spelled out byte by byte.

Each capture follows what the client's source builds (iPXE `src/net/udp/dhcp.c`, EDK2
`NetworkPkg/UefiPxeBcDxe` and `HttpBootDxe`, ISC dhclient), with this test bed's addresses.
"""

from __future__ import annotations

QEMU_MAC = bytes.fromhex("525400123456")
QEMU_MAC_TEXT = "52:54:00:12:34:56"
UUID_BYTES = bytes.fromhex("8c1e1a2b3c4d4e5f8091a2b3c4d5e6f7")
UUID_TEXT = "8c1e1a2b-3c4d-4e5f-8091-a2b3c4d5e6f7"


def bootp_header(
    *,
    xid: int,
    mac: bytes = QEMU_MAC,
    op: int = 1,
    hops: int = 0,
    secs: int = 0,
    flags: int = 0,
    ciaddr: str = "0.0.0.0",
    yiaddr: str = "0.0.0.0",
    siaddr: str = "0.0.0.0",
    giaddr: str = "0.0.0.0",
) -> bytes:
    """The fixed 236 bytes before the magic cookie (RFC 2131 §2, figure 1)."""

    def ip(text: str) -> bytes:
        return bytes(int(part) for part in text.split("."))

    return b"".join(
        (
            bytes((op,)),  # op: 1 BOOTREQUEST
            b"\x01",  # htype: 1 Ethernet
            bytes((len(mac),)),  # hlen: 6
            bytes((hops,)),  # hops: 0, or 1 after a relay
            xid.to_bytes(4, "big"),  # xid
            secs.to_bytes(2, "big"),  # secs since the client started
            flags.to_bytes(2, "big"),  # flags: 0x8000 = broadcast reply
            ip(ciaddr),  # ciaddr: set only when the client holds an address
            ip(yiaddr),  # yiaddr
            ip(siaddr),  # siaddr
            ip(giaddr),  # giaddr: the relay's address
            mac.ljust(16, b"\0"),  # chaddr, padded to 16
            bytes(64),  # sname
            bytes(128),  # file
        )
    )


COOKIE = bytes.fromhex("63825363")  # 99.130.83.99

IPXE_BIOS_DISCOVER = (
    bootp_header(xid=0x00123456, flags=0x8000)
    + COOKIE
    + bytes.fromhex(
        "35 01 01"  # 53 message type, 1 byte: DISCOVER
        "39 02 05c0"  # 57 max message size, 2 bytes: 1472 (1500 - IP - UDP)
        "5d 02 0000"  # 93 client arch, 2 bytes: 0 x86 BIOS
        "5e 03 010201"  # 94 client NDI, 3 bytes: UNDI 2.1
        "3c 20 505845436c69656e743a417263683a30303030303a554e44493a303032303031"
        # 60 vendor class, 32 bytes: "PXEClient:Arch:00000:UNDI:002001"
        "4d 04 69505845"  # 77 user class, 4 bytes: "iPXE", not RFC 3004 framed
        "37 17 010306070c0f111a2b3c4243778081828384858687afcb"
        # 55 parameter request list, 23 codes: 1 3 6 7 12 15 17 26 43 60 66 67 119 128-135 175 203
        "af 14 150101 130101 170101 180101 210101 eb03011501"
        # 175 iPXE, 20 bytes: features TFTP, HTTP, DNS, bzImage, PXE; version 1.21.1
        "3d 07 01525400123456"  # 61 client id, 7 bytes: type 1 (Ethernet) + MAC
        "61 11 00"
        + UUID_BYTES.hex()  # 97 machine id, 17 bytes: type 0 + SMBIOS UUID
        + "ff"  # end
    )
)

INTEL_PXE_BIOS_DISCOVER = (
    bootp_header(xid=0x7E57B105, flags=0x8000)
    + COOKIE
    + bytes.fromhex(
        "35 01 01"  # 53 message type: DISCOVER
        "39 02 04ec"  # 57 max message size: 1260
        "5d 02 0000"  # 93 client arch: 0 x86 BIOS
        "5e 03 010201"  # 94 client NDI: UNDI 2.1
        "61 11 00"
        + UUID_BYTES.hex()  # 97 machine id: type 0 + UUID
        + "37 18 0102030506 0b0c0d0f1011 122b363c43 8081828384858687"
        # 55 PRL, 24 codes: 1 2 3 5 6 11 12 13 15 16 17 18 43 54 60 67 128-135
        "3c 20 505845436c69656e743a417263683a30303030303a554e44493a303032303031"
        # 60 vendor class: "PXEClient:Arch:00000:UNDI:002001"
        "ff"  # end
    )
)


def edk2_pxe_discover(arch: int, *, xid: int = 0x0A0B0C0D) -> bytes:
    """An EDK2 (OVMF/AAVMF) PXE DISCOVER; `arch` is 7 on x64 and 11 on arm64."""
    return (
        bootp_header(xid=xid, secs=4, flags=0x8000)
        + COOKIE
        + bytes.fromhex(
            "35 01 01"  # 53 message type: DISCOVER
            "39 02 05c0"  # 57 max message size: 1472
            "37 23 0102030405060c0d0f111216171c28292a2b3233363a3b3c4243618081828384858687"
            # 55 parameter request list, 35 codes: EDK2's PXE list, 97 and 128-135 last
            "61 11 00"
            + UUID_BYTES.hex()  # 97 machine id: type 0 + UUID
            + "5e 03 010300"  # 94 client NDI: UNDI 3.0
            "5d 02"
            + arch.to_bytes(2, "big").hex()  # 93 client arch
            + "3c 20"
            + f"PXEClient:Arch:{arch:05d}:UNDI:003000".encode().hex()
            # 60 vendor class, 32 bytes: "PXEClient:Arch:00007:UNDI:003000" on x64
            + "ff"  # end
        )
    )


EDK2_UEFI_X64_DISCOVER = edk2_pxe_discover(7)
EDK2_ARM64_DISCOVER = edk2_pxe_discover(11)

EDK2_HTTP_DISCOVER = (
    bootp_header(xid=0x0BADF00D, flags=0x8000)
    + COOKIE
    + bytes.fromhex(
        "35 01 01"  # 53 message type: DISCOVER
        "39 02 05c0"  # 57 max message size: 1472
        "37 0a 0103060c0f1c2b3c4243"  # 55 PRL: 1 3 6 12 15 28 43 60 66 67
        "61 11 00"
        + UUID_BYTES.hex()  # 97 machine id: type 0 + UUID
        + "5e 03 010310"  # 94 client NDI: UNDI 3.16
        "5d 02 0010"  # 93 client arch: 16 x64 UEFI HTTP
        "3c 21 48545450436c69656e743a417263683a30303031363a554e44493a303033303136"
        # 60 vendor class, 33 bytes: "HTTPClient:Arch:00016:UNDI:003016"
        "ff"  # end
    )
)

RELAYED_REQUEST = (
    bootp_header(
        xid=0x5EED0001, hops=1, secs=2, giaddr="10.20.0.1", mac=bytes.fromhex("525400abcdef")
    )
    + COOKIE
    + bytes.fromhex(
        "35 01 03"  # 53 message type: REQUEST
        "36 04 c0000201"  # 54 server id: 192.0.2.1, so SELECTING
        "32 04 0a140005"  # 50 requested ip: 10.20.0.5
        "39 02 05c0"  # 57 max message size: 1472
        "5d 02 0000"  # 93 client arch: x86 BIOS
        "5e 03 010201"  # 94 client NDI: UNDI 2.1
        "3c 20 505845436c69656e743a417263683a30303030303a554e44493a303032303031"
        # 60 vendor class: "PXEClient:Arch:00000:UNDI:002001"
        "52 12 0106 657468302f31 0208 0000525400abcdef"
        # 82 relay agent info, 18 bytes: circuit id "eth0/1", remote id (8 bytes)
        "ff"  # end
    )
)

DHCLIENT_INIT_REBOOT = (
    bootp_header(xid=0x3903F326, mac=bytes.fromhex("00163e5e6c00"))
    + COOKIE
    + bytes.fromhex(
        "35 01 03"  # 53 message type: REQUEST, no 54 and ciaddr 0, so INIT-REBOOT
        "32 04 c000020b"  # 50 requested ip: 192.0.2.11
        "0c 05 7765623033"  # 12 hostname, 5 bytes: "web03"
        "37 0d 011c02030f06770c2c2f1a792a"
        # 55 PRL: 1 28 2 3 15 6 119 12 44 47 26 121 42 (dhclient.conf defaults)
        "ff"  # end
    )
).ljust(300, b"\0")  # dhclient pads to the 300-byte BOOTP minimum
