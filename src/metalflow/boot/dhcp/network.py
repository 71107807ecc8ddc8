"""What an operator configures per DHCP network: its mode, addresses, options and pool."""

from __future__ import annotations

import ipaddress
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from metalflow.values import DhcpMode as DhcpMode

IPv4 = ipaddress.IPv4Address


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    destination: ipaddress.IPv4Network
    gateway: IPv4


class AddressRange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    start: IPv4
    end: IPv4

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if int(self.end) < int(self.start):
            raise ValueError(f"pool end {self.end} is before its start {self.start}")
        return self

    def __contains__(self, address: object) -> bool:
        # As integers: IPv4Address's <= is two Python-level comparisons (functools.total_ordering).
        return isinstance(address, IPv4) and int(self.start) <= int(address) <= int(self.end)

    @property
    def size(self) -> int:
        return int(self.end) - int(self.start) + 1


class NetworkConfig(BaseModel):
    """One subnet metalflow serves, directly on `interface` or through relays (by giaddr)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subnet: ipaddress.IPv4Network
    mode: DhcpMode = DhcpMode.RESERVATION
    server_ip: IPv4 | None = Field(
        default=None,
        description="metalflow's address as seen from this network (siaddr, option 54); default:"
        " the address of the interface it is served on",
    )
    gateway: IPv4 | None = None
    nameservers: tuple[IPv4, ...] = ()
    domain: str | None = None
    ntp_servers: tuple[IPv4, ...] = ()
    routes: tuple[Route, ...] = ()
    lease_time: int = Field(default=86400, ge=60, le=2**32 - 1)
    pool: AddressRange | None = Field(
        default=None, description="addresses for machines not in inventory (discovery)"
    )

    @model_validator(mode="after")
    def _inside(self) -> Self:
        if self.gateway is not None and self.gateway not in self.subnet:
            raise ValueError(f"gateway {self.gateway} is outside subnet {self.subnet}")
        if self.pool is not None:
            for end in (self.pool.start, self.pool.end):
                if end not in self.subnet:
                    raise ValueError(f"pool address {end} is outside subnet {self.subnet}")
            if self.mode is not DhcpMode.RESERVATION:
                raise ValueError(f"a pool needs mode reservation (this network is {self.mode})")
        return self

    @property
    def netmask(self) -> IPv4:
        return self.subnet.netmask
