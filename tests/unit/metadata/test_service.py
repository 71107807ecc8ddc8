"""The metadata service's pure parts: who the caller is, and paths with secrets in them."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from metalflow.metadata.service import caller_address, route, shown_path

TRUSTED = [ipaddress.ip_network("192.0.2.0/28"), ipaddress.ip_network("2001:db8::/64")]
trusted_v4 = st.integers(0, 15).map(lambda n: f"192.0.2.{n}")
untrusted_v4 = st.integers(16, 255).map(lambda n: f"192.0.2.{n}")
tokens = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789._-"), min_size=1)


@given(peer=untrusted_v4, forwarded=st.lists(untrusted_v4 | trusted_v4, max_size=4))
def test_an_untrusted_peer_is_the_caller_whatever_it_forwards(
    peer: str, forwarded: list[str]
) -> None:
    assert caller_address(peer, ", ".join(forwarded) or None, TRUSTED) == peer


@given(
    proxies=st.lists(trusted_v4, min_size=1, max_size=3),
    client=untrusted_v4,
    spoofed=st.lists(untrusted_v4, max_size=3),
)
def test_behind_trusted_proxies_the_caller_is_the_last_untrusted_hop(
    proxies: list[str], client: str, spoofed: list[str]
) -> None:
    """What the client itself put in the header (spoofed) comes before its own address."""
    peer, *hops = proxies
    forwarded = ", ".join([*spoofed, client, *hops])
    assert caller_address(peer, forwarded, TRUSTED) == client


def test_addresses_are_canonical_and_junk_is_no_caller() -> None:
    assert caller_address("::ffff:198.18.0.5", None, TRUSTED) == "198.18.0.5"
    assert caller_address("2001:DB8:1::0001", None, TRUSTED) == "2001:db8:1::1"
    assert caller_address("192.0.2.1", "not-an-address", TRUSTED) is None
    assert caller_address("192.0.2.1", "192.0.2.2", TRUSTED) is None, "only proxies: nobody"
    assert caller_address(None, None, TRUSTED) is None


@given(token=tokens, rest=st.sampled_from(["/latest/meta-data/", "/metadata", "/phone-home", ""]))
def test_an_instance_token_is_split_off_and_never_shown(token: str, rest: str) -> None:
    path = f"/instances/{token}{rest}"
    assert route(path).token == token
    assert route(path).rest == rest
    assert shown_path(path) == f"/instances/TOKEN{rest}"
    assert route(rest or "/metadata").token is None
