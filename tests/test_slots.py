"""WorkerSlots: who a group commit may wait for."""

from __future__ import annotations

from hookdispatch._slots import WorkerSlots
from hookdispatch.storage import Claim
from hookdispatch.testing._samples import make_delivery, make_endpoint, make_event


class _Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def _claims(count: int, endpoint_id: str) -> list[Claim]:
    endpoint = make_endpoint(id=endpoint_id)
    claims = []
    for n in range(count):
        event = make_event(n=n)
        claims.append(
            Claim(
                delivery=make_delivery(event, endpoint),
                endpoint=endpoint,
                event_type=event.type,
                body=event.body,
                lease="lse_x",
            )
        )
    return claims


def test_coming_leaves_out_attempts_out_for_long() -> None:
    clock = _Clock()
    slots = WorkerSlots(8, clock=clock)
    stuck = _claims(3, "ep_slow")
    slots.started(stuck)
    clock.now += 5.0  # a slow receiver: three attempts out for 5 s
    fast = _claims(2, "ep_fast")
    slots.started(fast)
    slots.reserve()  # a worker between its attempt and its group
    assert slots.free == 2
    assert slots.coming(within=0.01) == 3  # the two just started, and the held slot
    clock.now += 0.02
    assert slots.coming(within=0.01) == 1
    for claim in fast:
        slots.finished(claim, succeeded=True)
    slots.release()
    assert slots.coming(within=0.01) == 0
    for claim in stuck:
        slots.finished(claim, succeeded=True)
    assert slots.idle
    assert slots.coming(within=10.0) == 0


def test_a_hung_attempt_is_not_coming_however_busy_its_endpoint() -> None:
    """Attempts are timed one by one: fast ones to the endpoint of a hung one end
    without making it look recent."""
    clock = _Clock()
    slots = WorkerSlots(8, clock=clock)
    [hung] = _claims(1, "ep_busy")
    slots.started([hung])
    for _ in range(100):
        clock.now += 0.011
        [fast] = _claims(1, "ep_busy")
        slots.started([fast])
        assert slots.coming(within=0.01) == 1  # the fast one only
        slots.finished(fast, succeeded=True)
    assert slots.coming(within=0.01) == 0
    slots.finished(hung, succeeded=False)
    assert slots.idle


def test_slots_a_dispatch_holds_are_not_coming() -> None:
    """A dispatch() holds the free slots while it leases its own deliveries: no
    ticket comes from them."""
    slots = WorkerSlots(8, clock=_Clock())
    slots.reserve(6, dispatch=True)
    slots.reserve()  # a worker on its way to its group
    assert slots.coming(within=0.01) == 1
    slots.release(6, dispatch=True)
    slots.release()
    assert slots.idle
