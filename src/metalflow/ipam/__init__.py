"""Service-provider IPAM: prefixes, the free-block allocator, reservations and assignments (v4, v6)."""
