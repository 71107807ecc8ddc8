"""DHCPv4: a pure codec and answer policy, with the asyncio server and lease store at the edge."""
