"""StorageStateMachine: a storage driven side by side with MemoryStorage, the model.

Hypothesis picks a sequence of operations (add endpoints and events, enable and
disable endpoints, claim at various times, complete with success or failure,
redeliver, let time pass); each is applied to both stores, and after every step the
two must agree on every delivery, every endpoint and the next due time. Lease
tokens differ between the two and are never compared. Claims are checked against
the contract on their own too (only claimable deliveries, earliest due first, as
many as the limit allows), then mirrored into the model delivery by delivery, since
the contract lets a backend break ties between equally due deliveries as it likes.

This module imports hypothesis; ``hookdispatch.testing`` loads it only on demand.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from attrs import evolve
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from .._core import Claim
from .._listing import DeliveryQuery
from .._models import Attempt, Delivery, DeliveryStatus, Endpoint, Event
from ..exceptions import InvalidInputError, UnknownEventError
from ..storage import MemoryStorage, Storage
from ._expect import check, equal, raises
from ._samples import BASE, SECRET, Result, outcome

__all__ = ["StorageStateMachine"]

_DELAYS = st.sampled_from([-5.0, 0.0, 0.000001, 0.5, 10.0, 90.0])
_STEPS = st.sampled_from([0.000001, 0.25, 1.0, 29.5, 61.0, 600.0])
_RESULTS: st.SearchStrategy[Result] = st.sampled_from(["succeeded", "retry", "failed"])


def _attempt_order(attempts: list[Attempt]) -> list[Attempt]:
    # The contract orders attempts by number; ties may come in either order.
    return sorted(attempts, key=lambda a: (a.number, a.started_at, a.id))


class StorageStateMachine(RuleBasedStateMachine):
    """Checks that a storage behaves like :class:`MemoryStorage` under any sequence of calls.

    Give the storage to test either as ``make_storage`` (a callable returning a new,
    empty storage) or by overriding :meth:`make_storage` in a subclass, whose
    ``TestCase`` attribute is then a test class pytest and unittest run.
    """

    def __init__(self, make_storage: Callable[[], Storage] | None = None) -> None:
        super().__init__()
        self.model: Storage = MemoryStorage()
        self.system: Storage = (make_storage or self.make_storage)()
        self.now: datetime = BASE
        self.serial = 0
        self.endpoint_ids: list[str] = []
        self.event_ids: list[str] = []
        self.claims: list[tuple[Claim, Claim]] = []
        """Leases not yet completed: (the model's claim, the system's claim)."""

    def make_storage(self) -> Storage:
        """A new, empty storage to test. Override, or pass ``make_storage``."""
        raise NotImplementedError("pass make_storage or override make_storage()")

    def teardown(self) -> None:
        try:
            self.system.close()
        finally:
            self.model.close()

    def _id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}_{self.serial:05d}"

    def _both(self) -> tuple[Storage, Storage]:
        return self.system, self.model

    def _pending_pairs(self) -> set[tuple[str, str]]:
        return {
            (d.event_id, d.endpoint_id)
            for d in self.model.list_deliveries(status=DeliveryStatus.PENDING)
        }

    def _new_delivery(self, event_id: str, endpoint_id: str, delay: float) -> Delivery:
        return Delivery(
            id=self._id("dlv"),
            event_id=event_id,
            endpoint_id=endpoint_id,
            status=DeliveryStatus.PENDING,
            attempt_count=0,
            next_attempt_at=self.now + timedelta(seconds=delay),
            last_error=None,
            created_at=self.now,
            updated_at=self.now,
        )

    # Endpoints ----------------------------------------------------------------------

    @rule(events=st.sampled_from([("*",), ("a",), ("b",), ("a", "b")]))
    def add_endpoint(self, events: tuple[str, ...]) -> None:
        endpoint = Endpoint(
            id=self._id("ep"),
            url=f"https://example.com/hooks/{self.serial}",
            secret=SECRET,
            events=events,
            enabled=True,
            created_at=self.now,
        )
        for storage in self._both():
            storage.add_endpoint(endpoint)
        self.endpoint_ids.append(endpoint.id)

    @precondition(lambda self: self.endpoint_ids)
    @rule(data=st.data())
    def add_an_endpoint_id_again(self, data: st.DataObject) -> None:
        endpoint_id = data.draw(st.sampled_from(self.endpoint_ids))
        endpoint = evolve(self.model.get_endpoint(endpoint_id), url="https://other.example/")
        for storage in self._both():
            with raises(InvalidInputError, f"{storage!r}.add_endpoint() with a taken id"):
                storage.add_endpoint(endpoint)

    @precondition(lambda self: self.endpoint_ids)
    @rule(data=st.data(), enabled=st.booleans())
    def enable_or_disable(self, data: st.DataObject, enabled: bool) -> None:
        endpoint_id = data.draw(st.sampled_from(self.endpoint_ids))
        endpoint = evolve(self.model.get_endpoint(endpoint_id), enabled=enabled)
        for storage in self._both():
            storage.update_endpoint(endpoint)

    # Events and deliveries ----------------------------------------------------------

    @rule(data=st.data(), event_type=st.sampled_from(["a", "b"]), delay=_DELAYS)
    def add_event(self, data: st.DataObject, event_type: str, delay: float) -> None:
        repeat = bool(self.event_ids) and data.draw(st.booleans(), label="repeat an event id")
        event_id = data.draw(st.sampled_from(self.event_ids)) if repeat else self._id("evt")
        event = Event.create(event_type, {"serial": self.serial}, now=self.now, id=event_id)
        targets: list[str] = []
        if self.endpoint_ids:
            targets = data.draw(st.lists(st.sampled_from(self.endpoint_ids), unique=True))
        deliveries = [self._new_delivery(event.id, target, delay) for target in targets]
        stored = self.system.add_event(event, deliveries)
        equal(stored, not repeat, "add_event() result (False only for an id already stored)")
        equal(self.model.add_event(event, deliveries), stored, "add_event() result vs the model")
        if stored:
            self.event_ids.append(event.id)
            equal(self.system.get_event(event.id).body, event.body, "get_event().body")

    @precondition(lambda self: self.event_ids and self.endpoint_ids)
    @rule(data=st.data(), delay=_DELAYS)
    def redeliver(self, data: st.DataObject, delay: float) -> None:
        event_id = data.draw(st.sampled_from(self.event_ids))
        endpoint_id = data.draw(st.sampled_from(self.endpoint_ids))
        # One pending delivery per (event, endpoint), as Dispatcher.redeliver ensures;
        # the model mirrors claims by that pair.
        assume((event_id, endpoint_id) not in self._pending_pairs())
        delivery = self._new_delivery(event_id, endpoint_id, delay)
        for storage in self._both():
            storage.add_deliveries([delivery])

    @precondition(lambda self: self.endpoint_ids)
    @rule()
    def add_deliveries_of_an_unknown_event(self) -> None:
        delivery = self._new_delivery("evt_unknown", self.endpoint_ids[0], 0.0)
        for storage in self._both():
            with raises(UnknownEventError, f"{storage!r}.add_deliveries() for an unknown event"):
                storage.add_deliveries([delivery])

    # Work ---------------------------------------------------------------------------

    @rule(
        data=st.data(),
        limit=st.integers(1, 4),
        lease=st.sampled_from([1.0, 30.0, 60.0]),
    )
    def claim(self, data: st.DataObject, limit: int, lease: float) -> None:
        event_id = None
        if self.event_ids:
            event_id = data.draw(st.none() | st.sampled_from(self.event_ids), label="event_id")
        excluded = self._draw_excluded(data)
        now, lease_until = self.now, self.now + timedelta(seconds=lease)
        claimable = self._claimable(excluded, event_id)
        claims = self.system.claim(
            now=now,
            lease_until=lease_until,
            limit=limit,
            event_id=event_id,
            exclude_endpoints=excluded,
        )
        self._take(claims, claimable, limit=limit, lease_until=lease_until)

    def _draw_excluded(self, data: st.DataObject) -> list[str]:
        if not self.endpoint_ids:
            return []
        return data.draw(
            st.lists(st.sampled_from(self.endpoint_ids), unique=True, max_size=2),
            label="exclude_endpoints",
        )

    def _claimable(self, excluded: list[str], event_id: str | None) -> dict[str, datetime]:
        """The model's deliveries a claim may take now, with their due times."""
        enabled = {ep.id for ep in self.model.list_endpoints() if ep.enabled}
        return {
            d.id: d.next_attempt_at
            for d in self.model.list_deliveries(status=DeliveryStatus.PENDING)
            if d.next_attempt_at is not None
            and d.next_attempt_at <= self.now
            and d.endpoint_id in enabled
            and d.endpoint_id not in excluded
            and (event_id is None or d.event_id == event_id)
        }

    def _take(
        self,
        claims: list[Claim],
        claimable: dict[str, datetime],
        *,
        limit: int,
        lease_until: datetime,
    ) -> None:
        """Check the system's claims against the model, and mirror them there."""
        taken = [c.delivery.id for c in claims]
        equal(len(taken), min(limit, len(claimable)), "number of deliveries claimed")
        equal(len(set(taken)), len(taken), "a claim returned one delivery twice")
        for delivery_id in taken:
            check(delivery_id in claimable, f"claim() returned {delivery_id}, not claimable")
        left = [due for delivery_id, due in claimable.items() if delivery_id not in taken]
        if taken and left:
            latest = max(claimable[delivery_id] for delivery_id in taken)
            check(latest <= min(left), "claim() must take the earliest-due deliveries first")

        every_endpoint = set(self.endpoint_ids)
        for claim in claims:
            delivery = claim.delivery
            mirrored = self.model.claim(
                now=self.now,
                lease_until=lease_until,
                limit=1,
                event_id=delivery.event_id,
                exclude_endpoints=every_endpoint - {delivery.endpoint_id},
            )
            equal([c.delivery.id for c in mirrored], [delivery.id], "the model's mirrored claim")
            [model_claim] = mirrored
            equal(delivery, model_claim.delivery, "Claim.delivery")
            equal(claim.endpoint, model_claim.endpoint, "Claim.endpoint")
            equal(claim.event_type, model_claim.event_type, "Claim.event_type")
            equal(claim.body, model_claim.body, "Claim.body")
            self.claims.append((model_claim, claim))

    @precondition(lambda self: self.claims)
    @rule(data=st.data(), result=_RESULTS, delay=st.sampled_from([0.5, 10.0, 45.0]))
    def complete(self, data: st.DataObject, result: Result, delay: float) -> None:
        index = data.draw(st.integers(0, len(self.claims) - 1), label="which lease")
        model_claim, system_claim = self.claims.pop(index)
        attempt, state = outcome(
            system_claim, result, now=self.now, retry_at=self.now + timedelta(seconds=delay)
        )
        how = data.draw(
            st.sampled_from(["complete", "complete_and_claim", "complete_many"]), label="how"
        )
        if how == "complete_many":
            excluded = self._draw_excluded(data)
            lease_until = self.now + timedelta(seconds=30)
            limit = data.draw(st.integers(0, 3), label="and claim this many (complete_many)")
            held, claims = self.system.complete_many(
                [(system_claim, attempt, state)],
                now=self.now,
                lease_until=lease_until,
                limit=limit,
                exclude_endpoints=excluded,
            )
            equal(
                held,
                [self.model.complete(model_claim, attempt, state)],
                "complete_many() result",
            )
            self._take(
                claims, self._claimable(excluded, None), limit=limit, lease_until=lease_until
            )
        elif how == "complete_and_claim":
            excluded = self._draw_excluded(data)
            lease_until = self.now + timedelta(seconds=30)
            stored, claims = self.system.complete_and_claim(
                system_claim,
                attempt,
                state,
                now=self.now,
                lease_until=lease_until,
                exclude_endpoints=excluded,
            )
            equal(
                stored,
                self.model.complete(model_claim, attempt, state),
                "complete_and_claim() result",
            )
            self._take(claims, self._claimable(excluded, None), limit=1, lease_until=lease_until)
        else:
            stored = self.system.complete(system_claim, attempt, state)
            equal(stored, self.model.complete(model_claim, attempt, state), "complete() result")
        attempts = self.system.list_attempts(state.id)
        equal(
            [a.number for a in attempts],
            sorted(a.number for a in attempts),
            "list_attempts() must be ordered by number",
        )
        equal(
            _attempt_order(attempts),
            _attempt_order(self.model.list_attempts(state.id)),
            "list_attempts()",
        )

    @rule(seconds=_STEPS)
    def let_time_pass(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    # Queries ------------------------------------------------------------------------

    @rule(
        data=st.data(),
        status=st.none() | st.sampled_from(DeliveryStatus),
        limit=st.none() | st.integers(1, 3),
    )
    def list_some_deliveries(
        self, data: st.DataObject, status: DeliveryStatus | None, limit: int | None
    ) -> None:
        event_id = endpoint_id = None
        if self.event_ids:
            event_id = data.draw(st.none() | st.sampled_from(self.event_ids), label="event_id")
        if self.endpoint_ids:
            endpoint_id = data.draw(st.none() | st.sampled_from(self.endpoint_ids))
        equal(
            self.system.list_deliveries(
                event_id=event_id, endpoint_id=endpoint_id, status=status, limit=limit
            ),
            self.model.list_deliveries(
                event_id=event_id, endpoint_id=endpoint_id, status=status, limit=limit
            ),
            f"list_deliveries({event_id=}, {endpoint_id=}, {status=}, {limit=})",
        )

    @rule(
        data=st.data(),
        status=st.none() | st.sampled_from(DeliveryStatus),
        limit=st.integers(1, 3),
        newest_first=st.booleans(),
    )
    def page_through_deliveries(
        self, data: st.DataObject, status: DeliveryStatus | None, limit: int, newest_first: bool
    ) -> None:
        """Every page of a listing, through both, page after page by keyset."""
        query = DeliveryQuery(status=status, limit=limit, newest_first=newest_first)
        if self.event_ids:
            query = evolve(query, event_id=data.draw(st.none() | st.sampled_from(self.event_ids)))
        if self.endpoint_ids:
            endpoint_id = data.draw(st.none() | st.sampled_from(self.endpoint_ids))
            query = evolve(query, endpoint_id=endpoint_id)
        if data.draw(st.booleans(), label="since"):
            query = evolve(query, since=self.now - timedelta(seconds=30))
        for page in range(100):
            got = self.system.find_deliveries(query)
            equal(got, self.model.find_deliveries(query), f"find_deliveries({query}), page {page}")
            if len(got) < limit:
                return
            query = evolve(query, after=(got[-1].created_at, got[-1].id))
        raise AssertionError("find_deliveries() never reached the last page")

    @precondition(lambda self: self.event_ids)
    @rule(data=st.data())
    def next_due_for_one_event(self, data: st.DataObject) -> None:
        event_id = data.draw(st.sampled_from(self.event_ids))
        equal(
            self.system.next_due_at(event_id=event_id),
            self.model.next_due_at(event_id=event_id),
            f"next_due_at(event_id={event_id!r})",
        )

    @rule()
    def every_attempt(self) -> None:
        for delivery in self.model.list_deliveries():
            equal(
                _attempt_order(self.system.list_attempts(delivery.id)),
                _attempt_order(self.model.list_attempts(delivery.id)),
                f"list_attempts({delivery.id!r})",
            )

    @invariant()
    def same_deliveries(self) -> None:
        equal(self.system.list_deliveries(), self.model.list_deliveries(), "list_deliveries()")

    @invariant()
    def same_next_due(self) -> None:
        equal(self.system.next_due_at(), self.model.next_due_at(), "next_due_at()")

    @invariant()
    def same_endpoints(self) -> None:
        equal(self.system.list_endpoints(), self.model.list_endpoints(), "list_endpoints()")
