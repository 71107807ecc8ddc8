"""IP address management: prefixes, allocation, reservations and assignments (v4 and v6)."""
