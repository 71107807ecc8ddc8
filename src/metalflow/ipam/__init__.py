"""Service-provider IPAM: prefixes, the free-block allocator, block layouts (v4 and v6)."""
