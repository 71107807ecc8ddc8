"""Service-provider IPAM: prefixes, the free-block allocator, reservations, assignments."""
