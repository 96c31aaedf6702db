"""The probe route's standing (rotator/clob/probe.py), on a clock the test moves: which 200s count,
when a left route is tried again. The adapter's requests around it are tested over HTTP in
tests/integration/test_probe_trust.py."""

from __future__ import annotations

from rotator.clob.probe import PROVE_EVERY, RETRY_CAP, RETRY_FIRST, ProbeRoute, answer_shape


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_200_counts_only_after_a_proof_and_only_in_the_shape_seen_since() -> None:
    clock = Clock()
    route = ProbeRoute(clock)
    shape = answer_shape({"balance": "0", "allowances": {}})
    assert not route.vouches(shape)
    route.proven(shape)
    assert route.vouches(shape)
    assert not route.vouches(answer_shape("OK"))  # the CLOB's root route answers a string
    route.changed()  # an answer neither 200 nor 401
    assert not route.vouches(shape)
    route.proven(shape)
    clock.now += PROVE_EVERY
    assert not route.vouches(shape)  # a cache keeps the shape: proven again every hour


def test_a_left_route_is_tried_again_after_a_doubling_back_off_reset_by_a_proof() -> None:
    clock = Clock()
    route = ProbeRoute(clock)
    assert route.usable()
    waits = []
    for _ in range(8):
        _news, after = route.leave("unserved")
        waits.append(after)
        assert not route.usable()
        clock.now += after - 0.01
        assert not route.usable()
        clock.now += 0.01
        assert route.usable()
    assert waits[0] == RETRY_FIRST and waits == sorted(waits) and waits[-1] == RETRY_CAP
    assert route.proven(answer_shape({})) is True  # was left: the adapter says it is back
    assert route.leave("unserved") == (True, RETRY_FIRST)
    assert route.leave("unauthenticated") == (True, RETRY_FIRST)  # another reason is news too
