"""The login throttle's sliding windows, and who a request is attributed to."""

from __future__ import annotations

import pytest

from identity.forwarding import client_address, trusted_networks
from identity.throttle import LoginThrottle, SlidingWindow


class Seconds:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Seconds:
    return Seconds()


def test_a_window_refuses_after_its_limit_until_the_oldest_failure_leaves(clock: Seconds) -> None:
    window = SlidingWindow(limit=3, window=300, clock=clock)
    for _ in range(2):
        window.add("alice")
        clock.now += 10
    assert window.retry_after("alice") is None
    window.add("alice")  # third failure at t=1020; the first was at t=1000
    assert window.retry_after("alice") == pytest.approx(280)
    clock.now += 279
    assert window.retry_after("alice") == pytest.approx(1)
    clock.now += 1
    assert window.retry_after("alice") is None


def test_windows_are_per_key(clock: Seconds) -> None:
    window = SlidingWindow(limit=1, window=60, clock=clock)
    window.add("alice")
    assert window.retry_after("alice") is not None
    assert window.retry_after("bob") is None


def test_a_window_forgets_the_stalest_keys_beyond_its_bound(clock: Seconds) -> None:
    window = SlidingWindow(limit=1, window=60, clock=clock, max_keys=2)
    for key in ("a", "b", "c"):
        window.add(key)
    assert window.retry_after("a") is None
    assert window.retry_after("c") is not None


def test_the_throttle_waits_for_the_longer_of_account_and_address(clock: Seconds) -> None:
    throttle = LoginThrottle(
        SlidingWindow(limit=2, window=300, clock=clock),
        SlidingWindow(limit=3, window=300, clock=clock),
    )
    throttle.record_failure("alice", "192.0.2.1")
    clock.now += 100
    throttle.record_failure("alice", "192.0.2.1")
    # the account is now throttled; the address not yet
    assert throttle.retry_after("alice", "198.51.100.9") == 200
    assert throttle.retry_after("bob", "192.0.2.1") is None
    throttle.record_failure("bob", "192.0.2.1")
    # the address's first failure (t=1000) leaves the window at t=1300
    assert throttle.retry_after("carol", "192.0.2.1") == 200
    # a success clears the account, never the address
    throttle.record_success("alice")
    assert throttle.retry_after("alice", "198.51.100.9") is None
    assert throttle.retry_after("alice", "192.0.2.1") == 200


def test_retry_after_is_a_whole_number_of_seconds_and_at_least_one(clock: Seconds) -> None:
    throttle = LoginThrottle(
        SlidingWindow(limit=1, window=10, clock=clock),
        SlidingWindow(limit=10, window=10, clock=clock),
    )
    throttle.record_failure("alice", None)
    clock.now += 9.9
    assert throttle.retry_after("alice", None) == 1


# -- client address ---------------------------------------------------------------------

LOOPBACK = trusted_networks(["127.0.0.1"])


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert client_address("203.0.113.5", ["198.51.100.1"], LOOPBACK) == "203.0.113.5"


def test_a_trusted_proxy_is_believed_about_the_client() -> None:
    assert client_address("127.0.0.1", ["198.51.100.1"], LOOPBACK) == "198.51.100.1"


def test_a_trusted_proxy_without_the_header_is_the_client() -> None:
    assert client_address("127.0.0.1", [], LOOPBACK) == "127.0.0.1"


def test_entries_a_caller_prepended_are_not_believed() -> None:
    # the caller sent "X-Forwarded-For: 10.9.9.9", the gateway appended the real peer
    forwarded = ["10.9.9.9, 198.51.100.1"]
    assert client_address("127.0.0.1", forwarded, LOOPBACK) == "198.51.100.1"


def test_a_chain_of_trusted_proxies_is_walked_to_the_first_untrusted_hop() -> None:
    trusted = trusted_networks(["127.0.0.1", "10.0.0.0/8"])
    forwarded = ["198.51.100.1", "10.1.2.3"]
    assert client_address("127.0.0.1", forwarded, trusted) == "198.51.100.1"


def test_a_garbled_hop_stops_the_walk_at_the_last_vouched_address() -> None:
    assert client_address("127.0.0.1", ["not-an-ip"], LOOPBACK) == "127.0.0.1"
    assert client_address("127.0.0.1", ["192.0.2.7:5555"], LOOPBACK) == "192.0.2.7"
