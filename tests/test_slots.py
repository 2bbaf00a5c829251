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
    slots.finished(fast[0].endpoint.id, succeeded=True)
    slots.finished(fast[1].endpoint.id, succeeded=True)
    slots.release()
    assert slots.coming(within=0.01) == 0
    for claim in stuck:
        slots.finished(claim.endpoint.id, succeeded=True)
    assert slots.idle
    assert slots.coming(within=10.0) == 0
