"""ContractTests: one test per point of the storage contract, single-threaded."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from attrs import evolve

from .._core import Claim
from .._listing import DeliveryQuery, EndpointQuery
from .._models import DEFAULT_TENANT, Delivery, DeliveryStatus, Endpoint
from ..exceptions import (
    InvalidInputError,
    InvalidStateError,
    UnknownDeliveryError,
    UnknownEndpointError,
    UnknownEventError,
    WouldBlockError,
)
from ..storage import Storage
from ._expect import check, equal, raises, skip, utc
from ._harness import StorageHarness
from ._samples import (
    BASE,
    LEASE,
    Result,
    at,
    make_delivery,
    make_endpoint,
    make_event,
    outcome,
    store_events,
)

__all__ = ["ContractTests"]


def _claim_one(storage: Storage, *, now: float = 0, lease: timedelta = LEASE) -> Claim:
    claims = storage.claim(now=at(now), lease_until=at(now) + lease, limit=10)
    equal(len(claims), 1, f"number of deliveries claimed at BASE+{now}s")
    return claims[0]


def _prune(storage: Storage, *, older_than: datetime, limit: int) -> int:
    """``storage.prune(...)``; skips the test when the backend does not support it."""
    try:
        return storage.prune(older_than=older_than, limit=limit)
    except InvalidStateError as exc:
        skip(str(exc))


def _prune_all(storage: Storage, *, older_than: datetime, limit: int = 1000) -> list[int]:
    """Call ``prune`` until it returns 0, as a caller does; the counts it returned."""
    counts: list[int] = []
    for _ in range(100):
        counts.append(_prune(storage, older_than=older_than, limit=limit))
        check(counts[-1] >= 0, f"prune() returned {counts[-1]}, a negative count")
        if counts[-1] == 0:
            return counts
    raise AssertionError(f"prune(limit={limit}) never returned 0: {counts}")


def _finish(storage: Storage, event_id: str, results: Mapping[str, Result], *, now: float) -> None:
    """Claim the event's due deliveries at BASE+``now`` and complete each with the
    result for its endpoint; a retry is scheduled far away (BASE + 10**6 s)."""
    claims = storage.claim(now=at(now), lease_until=at(now) + LEASE, limit=10, event_id=event_id)
    equal(
        sorted(c.endpoint.id for c in claims), sorted(results), f"endpoints claimed at BASE+{now}s"
    )
    for claim in claims:
        result = results[claim.endpoint.id]
        attempt, state = outcome(claim, result, now=at(now), retry_at=at(10**6))
        check(storage.complete(claim, attempt, state), f"complete() ({result})")


def _store_due(storage: Storage, endpoint: Endpoint, dues: list[float]) -> list[Delivery]:
    """One event of ``endpoint``'s tenant per due time (BASE + seconds), each with one
    delivery to ``endpoint``, in that order."""
    stored = []
    for n, due in enumerate(dues):
        event = make_event(n=n, tenant=endpoint.tenant)
        delivery = make_delivery(event, endpoint, due=at(due))
        storage.add_event(event, [delivery])
        stored.append(delivery)
    return stored


def _tenants_of(claims: list[Claim]) -> list[str]:
    return sorted(claim.delivery.tenant for claim in claims)


def _ids(deliveries: list[Delivery]) -> list[str]:
    return [d.id for d in deliveries]


def _ids_of(endpoints: list[Endpoint]) -> list[str]:
    return [e.id for e in endpoints]


def _check_delivery_times(delivery: Delivery) -> None:
    utc(delivery.created_at, "Delivery.created_at")
    utc(delivery.updated_at, "Delivery.updated_at")
    utc(delivery.next_attempt_at, "Delivery.next_attempt_at")


class ContractTests(StorageHarness):
    """The single-threaded half of the conformance suite."""

    # A new store --------------------------------------------------------------------

    def test_new_storage_is_empty(self) -> None:
        storage = self.storage
        equal(storage.list_endpoints(), [], "list_endpoints() of a new storage")
        equal(storage.list_deliveries(), [], "list_deliveries() of a new storage")
        equal(storage.next_due_at(), None, "next_due_at() of a new storage")
        far = at(10**6)
        equal(storage.claim(now=far, lease_until=far + LEASE, limit=5), [], "claim() of nothing")

    def test_close_is_idempotent(self) -> None:
        storage = self.new_storage()
        storage.close()
        storage.close()

    def test_without_waiting_does_the_call_or_nothing(self) -> None:
        storage = self.storage
        endpoint, event = make_endpoint(), make_event()
        storage.add_endpoint(endpoint)

        def dispatch_and_claim() -> list[Claim]:
            storage.add_event_to_subscribers(event, now=at(1))
            return storage.claim(now=at(1), lease_until=at(1) + LEASE, limit=5)

        try:
            claims = storage.without_waiting(dispatch_and_claim)
        except WouldBlockError:
            # Before anything changed: the whole call can go to a thread.
            with raises(UnknownEventError, "get_event() after WouldBlockError"):
                storage.get_event(event.id)
            equal(storage.list_deliveries(), [], "deliveries after WouldBlockError")
            return
        equal([c.delivery.event_id for c in claims], [event.id], "what the call returned")
        equal(storage.get_event(event.id), event, "the event the call stored")

    # Endpoints ----------------------------------------------------------------------

    def test_endpoints_round_trip_in_creation_order(self) -> None:
        storage = self.storage
        second = make_endpoint(created_at=at(2.5), events=("invoice.paid", "user.created"))
        first = make_endpoint(created_at=at(1), enabled=False)
        tie = make_endpoint(created_at=at(2.5), url="http://127.0.0.1:8080/hooks?x=1")
        for endpoint in (second, first, tie):
            storage.add_endpoint(endpoint)
        for endpoint in (first, second, tie):
            got = storage.get_endpoint(endpoint.id)
            equal(got, endpoint, "get_endpoint() of a stored endpoint")
            utc(got.created_at, "Endpoint.created_at")
        equal(
            [ep.id for ep in storage.list_endpoints()],
            [first.id, second.id, tie.id],
            "list_endpoints() order (by created_at, then the order they were stored)",
        )

    def test_duplicate_endpoint_id_raises_invalid_input(self) -> None:
        storage = self.storage
        endpoint = make_endpoint()
        storage.add_endpoint(endpoint)
        with raises(InvalidInputError, "add_endpoint() with an id already stored"):
            storage.add_endpoint(evolve(endpoint, url="https://other.example/hooks"))
        equal(storage.get_endpoint(endpoint.id), endpoint, "the endpoint after a rejected add")
        equal(len(storage.list_endpoints()), 1, "number of endpoints after a rejected add")

    def test_update_endpoint_replaces_it(self) -> None:
        storage = self.storage
        endpoint = make_endpoint()
        storage.add_endpoint(endpoint)
        changed = evolve(
            endpoint,
            url="https://new.example/hooks",
            secret="whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldw==",  # noqa: S106 - a sample
            events=("invoice.paid",),
            enabled=False,
        )
        storage.update_endpoint(changed)
        equal(storage.get_endpoint(endpoint.id), changed, "get_endpoint() after update_endpoint()")
        equal(storage.list_endpoints(), [changed], "list_endpoints() after update_endpoint()")

    def test_endpoints_keep_a_rotations_previous_secret_and_its_expiry(self) -> None:
        storage = self.storage
        endpoint = make_endpoint()
        storage.add_endpoint(endpoint)
        equal(
            storage.get_endpoint(endpoint.id).previous_secret,
            None,
            "Endpoint.previous_secret of an endpoint never rotated",
        )
        rotated = evolve(
            endpoint,
            secret="whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldw==",  # noqa: S106 - a sample
            previous_secret=endpoint.secret,
            previous_secret_expires_at=at(86400.25),
        )
        storage.update_endpoint(rotated)
        got = storage.get_endpoint(endpoint.id)
        equal(got, rotated, "get_endpoint() after a rotation (previous secret and its expiry)")
        utc(got.previous_secret_expires_at, "Endpoint.previous_secret_expires_at")
        equal(storage.list_endpoints(), [rotated], "list_endpoints() after a rotation")
        equal(storage.endpoints_for(DEFAULT_TENANT, "user.created"), [rotated], "endpoints_for()")
        event = make_event()
        check(storage.add_event(event, [make_delivery(event, endpoint)]), "add_event() stored")
        claimed = _claim_one(storage).endpoint
        equal(claimed, rotated, "Claim.endpoint during a rotation (previous secret and expiry)")
        utc(claimed.previous_secret_expires_at, "the claimed endpoint's previous_secret_expires_at")
        ended = evolve(rotated, previous_secret=None, previous_secret_expires_at=None)
        storage.update_endpoint(ended)
        equal(storage.get_endpoint(endpoint.id), ended, "get_endpoint() after ending the rotation")
        second = make_endpoint(id="ep_rotated_at_birth")
        second = evolve(second, previous_secret=rotated.secret, previous_secret_expires_at=at(5))
        storage.add_endpoint(second)
        equal(storage.get_endpoint(second.id), second, "add_endpoint() with a previous secret")

    def test_every_claim_sees_its_endpoint_as_it_is_now(self) -> None:
        # A storage may keep what it built of an endpoint from one claim to the next;
        # any change to the endpoint shows in the next claim all the same.
        storage = self.storage
        endpoint = make_endpoint()
        storage.add_endpoint(endpoint)
        store_events(storage, 3, endpoint=endpoint)
        [first] = storage.claim(now=BASE, lease_until=at(60), limit=1)
        equal(first.endpoint, endpoint, "the first claim's endpoint")
        changed = evolve(
            endpoint, description="changed", headers={"X-Token": "new"}, metadata={"k": [1]}
        )
        storage.update_endpoint(changed)
        [second] = storage.claim(now=BASE, lease_until=at(60), limit=1)
        equal(second.endpoint, changed, "a claim after update_endpoint() of its headers")
        rotated = evolve(
            changed,
            secret=make_endpoint().secret,
            previous_secret=changed.secret,
            previous_secret_expires_at=at(100),
        )
        storage.update_endpoint(rotated)
        held, [third] = storage.complete_many(
            [(first, *outcome(first, "succeeded", now=at(1)))],
            now=at(1),
            lease_until=at(61),
            limit=1,
        )
        equal(held, [True], "complete_many() of the first")
        equal(third.endpoint, rotated, "complete_many()'s claim after a rotation of its secret")

    def test_endpoints_keep_their_description_headers_and_metadata(self) -> None:
        storage = self.storage
        plain = make_endpoint()
        storage.add_endpoint(plain)
        got = storage.get_endpoint(plain.id)
        equal(
            (got.description, dict(got.headers), dict(got.metadata)),
            ("", {}, {}),
            "description, headers and metadata of an endpoint stored without them",
        )
        endpoint = evolve(
            make_endpoint(created_at=at(1)),
            description="Billing receiver — Zoë's team",
            headers={"Authorization": "Bearer sample-token", "X-Customer": "acct 42"},
            metadata={"customer": "acct_42", "plan": {"tier": "pro", "seats": [1, 2.5]}},
        )
        storage.add_endpoint(endpoint)
        equal(storage.get_endpoint(endpoint.id), endpoint, "get_endpoint() with headers")
        equal(storage.list_endpoints(), [plain, endpoint], "list_endpoints() with headers")
        equal(
            storage.endpoints_for(DEFAULT_TENANT, "user.created"),
            [plain, endpoint],
            "endpoints_for() with headers",
        )
        event = make_event()
        check(storage.add_event(event, [make_delivery(event, endpoint)]), "add_event() stored")
        equal(_claim_one(storage).endpoint, endpoint, "Claim.endpoint with headers")
        changed = evolve(
            endpoint,
            description="",
            headers={"X-Other": "1"},
            metadata={"customer": "acct_43"},
        )
        storage.update_endpoint(changed)
        equal(storage.get_endpoint(endpoint.id), changed, "get_endpoint() after changing headers")
        later = make_event(id="evt_headers_by_event")
        check(storage.add_event(later, [make_delivery(later, endpoint)]), "add_event() stored")
        [claim] = storage.claim(
            now=at(10**7), lease_until=at(10**7) + LEASE, limit=10, event_id=later.id
        )
        equal(claim.endpoint, changed, "Claim.endpoint (claimed by event id) after the change")

    # Tenants and fan-out -------------------------------------------------------------

    def test_endpoints_and_events_keep_their_tenant(self) -> None:
        storage = self.storage
        endpoint = make_endpoint(tenant="acct_42")
        storage.add_endpoint(endpoint)
        equal(storage.get_endpoint(endpoint.id).tenant, "acct_42", "Endpoint.tenant as stored")
        equal(storage.list_endpoints()[0].tenant, "acct_42", "list_endpoints() tenant")
        event = make_event(tenant="acct_42")
        check(storage.add_event(event, [make_delivery(event, endpoint)]), "add_event() stored")
        equal(storage.get_event(event.id).tenant, "acct_42", "Event.tenant as stored")
        claim = _claim_one(storage)
        equal(claim.endpoint.tenant, "acct_42", "the claimed endpoint's tenant")
        moved = evolve(endpoint, tenant="acct_43")
        storage.update_endpoint(moved)
        equal(storage.get_endpoint(endpoint.id).tenant, "acct_43", "tenant after update")

    def test_fan_out_finds_only_the_tenants_subscribed_enabled_endpoints(self) -> None:
        storage = self.storage
        mine = [
            make_endpoint(tenant="acct_a", events=("user.created",), created_at=at(1)),
            make_endpoint(tenant="acct_a", events=("user.*",), created_at=at(2)),
            make_endpoint(tenant="acct_a", events=("*",), created_at=at(3)),
            make_endpoint(tenant="acct_a", events=("invoice.paid", "user.*"), created_at=at(4)),
        ]
        others = [
            make_endpoint(tenant="acct_b", events=("*",)),  # another tenant
            make_endpoint(tenant="acct_b", events=("user.created",)),
            make_endpoint(events=("*",)),  # the default tenant
            make_endpoint(tenant="acct_a", events=("invoice.paid",)),  # not subscribed
            make_endpoint(tenant="acct_a", events=("users.*",)),  # users.* is not user.*
            make_endpoint(tenant="acct_a", events=("user.created.v2",)),
            make_endpoint(tenant="acct_a", events=("user.*",), enabled=False),
        ]
        for endpoint in [*reversed(mine), *others]:
            storage.add_endpoint(endpoint)
        equal(
            [e.id for e in storage.endpoints_for("acct_a", "user.created")],
            [e.id for e in mine],
            "endpoints_for('acct_a', 'user.created') (enabled, subscribed, in creation order)",
        )
        equal(
            [e.id for e in storage.endpoints_for("acct_a", "user.subscription.updated")],
            [mine[1].id, mine[2].id, mine[3].id],
            "endpoints_for() of a deeper type: 'user.*' and '*' match it",
        )
        equal(storage.endpoints_for("acct_c", "user.created"), [], "a tenant with no endpoints")
        equal(
            [e.id for e in storage.endpoints_for("default", "user.created")],
            [others[2].id],
            "endpoints_for() of the default tenant",
        )

    def test_fan_out_follows_updates_to_subscriptions_tenant_and_state(self) -> None:
        storage = self.storage
        endpoint = make_endpoint(tenant="acct_a", events=("user.created",))
        storage.add_endpoint(endpoint)
        storage.update_endpoint(evolve(endpoint, events=("invoice.*",)))
        equal(storage.endpoints_for("acct_a", "user.created"), [], "after unsubscribing")
        equal(
            [e.id for e in storage.endpoints_for("acct_a", "invoice.paid")],
            [endpoint.id],
            "after subscribing to invoice.*",
        )
        storage.update_endpoint(evolve(endpoint, events=("invoice.*",), tenant="acct_b"))
        equal(storage.endpoints_for("acct_a", "invoice.paid"), [], "the old tenant, after a move")
        equal(len(storage.endpoints_for("acct_b", "invoice.paid")), 1, "the new tenant")
        storage.update_endpoint(
            evolve(endpoint, events=("invoice.*",), tenant="acct_b", enabled=False)
        )
        equal(storage.endpoints_for("acct_b", "invoice.paid"), [], "a disabled endpoint")

    def test_unknown_ids_raise_not_found(self) -> None:
        storage = self.storage
        store_events(storage, 1)
        with raises(UnknownEndpointError, "get_endpoint('ep_missing')"):
            storage.get_endpoint("ep_missing")
        with raises(UnknownEndpointError, "update_endpoint() of an endpoint never stored"):
            storage.update_endpoint(make_endpoint(id="ep_missing"))
        with raises(UnknownEventError, "get_event('evt_missing')"):
            storage.get_event("evt_missing")
        with raises(UnknownDeliveryError, "get_delivery('dlv_missing')"):
            storage.get_delivery("dlv_missing")
        with raises(UnknownDeliveryError, "list_attempts('dlv_missing')"):
            storage.list_attempts("dlv_missing")

    def test_lookups_with_a_nul_character_find_nothing(self) -> None:
        # No id, type or tenant holds one (each is checked when made), so none
        # matches: a NUL from a URL or a form is "not found", never a driver's error.
        storage = self.storage
        [delivery] = store_events(storage, 1)
        nul = delivery.id + "\0"
        with raises(UnknownEndpointError, "get_endpoint() of an id with a NUL"):
            storage.get_endpoint(delivery.endpoint_id + "\0")
        with raises(UnknownEventError, "get_event() of an id with a NUL"):
            storage.get_event(delivery.event_id + "\0")
        with raises(UnknownDeliveryError, "get_delivery() of an id with a NUL"):
            storage.get_delivery(nul)
        with raises(UnknownDeliveryError, "list_attempts() of an id with a NUL"):
            storage.list_attempts(nul)
        equal(storage.list_deliveries(event_id=nul), [], "deliveries of an event id with a NUL")
        query = DeliveryQuery(event_type="user.created\0", tenant="acct\0")
        equal(storage.find_deliveries(query), [], "deliveries of a type and tenant with a NUL")
        equal(storage.endpoints_for("acct\0", "user.created"), [], "a tenant with a NUL")
        equal(storage.find_endpoints(EndpointQuery(tenant="acct\0")), [], "a tenant's endpoints")

    # Events and deliveries ----------------------------------------------------------

    def test_event_and_deliveries_round_trip(self) -> None:
        storage = self.storage
        one, two = make_endpoint(), make_endpoint(created_at=at(1))
        storage.add_endpoint(one)
        storage.add_endpoint(two)
        event = make_event()
        deliveries = [
            make_delivery(event, one, due=at(0.000001)),
            evolve(make_delivery(event, two, due=at(30)), attempt_count=2, last_error="HTTP 500"),
        ]
        equal(storage.add_event(event, deliveries), True, "add_event() of a new event")
        got = storage.get_event(event.id)
        equal(got, event, "get_event()")
        equal(got.body, event.body, "get_event().body (the exact bytes stored)")
        utc(got.created_at, "Event.created_at")
        for delivery in deliveries:
            stored = storage.get_delivery(delivery.id)
            equal(stored, delivery, "get_delivery() of a stored delivery")
            _check_delivery_times(stored)
        equal(storage.list_deliveries(), deliveries, "list_deliveries() after add_event()")

    def test_add_event_without_deliveries(self) -> None:
        storage = self.storage
        event = make_event()
        equal(storage.add_event(event, []), True, "add_event() with no deliveries")
        equal(storage.get_event(event.id), event, "get_event() of an event with no deliveries")
        equal(storage.list_deliveries(), [], "list_deliveries()")

    def test_add_event_is_idempotent_on_event_id(self) -> None:
        storage = self.storage
        endpoint = make_endpoint()
        storage.add_endpoint(endpoint)
        event = make_event(id="evt_fixed", n=1)
        first = make_delivery(event, endpoint)
        equal(storage.add_event(event, [first]), True, "first add_event()")
        again = make_event(id="evt_fixed", n=2)
        equal(
            storage.add_event(again, [make_delivery(again, endpoint)]),
            False,
            "add_event() with an event id already stored",
        )
        equal(storage.list_deliveries(), [first], "deliveries after the repeated add_event()")
        equal(storage.get_event("evt_fixed").body, event.body, "the event kept is the first one")

    def test_add_event_to_subscribers_fans_out_and_stores_at_once(self) -> None:
        storage = self.storage
        mine = [
            make_endpoint(tenant="acct_a", events=(pattern,), created_at=at(n))
            for n, pattern in enumerate(["*", "user.*", "user.created", "*", "user.*", "*"])
        ]
        for endpoint in mine:
            storage.add_endpoint(endpoint)
        for endpoint in (
            make_endpoint(tenant="acct_b"),  # another tenant's
            make_endpoint(tenant="acct_a", events=("invoice.*",)),  # another type
            make_endpoint(tenant="acct_a", enabled=False),  # disabled
        ):
            storage.add_endpoint(endpoint)
        event = make_event(type="user.created", tenant="acct_a")
        equal(storage.add_event_to_subscribers(event, now=at(7)), True, "a new event")
        equal(storage.get_event(event.id), event, "the event as stored")
        deliveries = storage.list_deliveries(event_id=event.id)
        equal(
            sorted(d.endpoint_id for d in deliveries),
            sorted(e.id for e in mine),
            "one delivery per subscribed, enabled endpoint of the event's tenant",
        )
        check(len({d.id for d in deliveries}) == len(mine), "delivery ids are unique")
        for delivery in deliveries:
            _check_delivery_times(delivery)
            equal(
                (delivery.status, delivery.attempt_count, delivery.last_error),
                (DeliveryStatus.PENDING, 0, None),
                "a new delivery's state",
            )
            equal(
                (delivery.created_at, delivery.updated_at, delivery.next_attempt_at),
                (at(7), at(7), at(7)),
                "a new delivery is made and due at now",
            )
            equal(
                (delivery.tenant, delivery.event_type),
                ("acct_a", "user.created"),
                "a new delivery's tenant and event type",
            )
        again = make_event(id=event.id, type="user.created", tenant="acct_a", n=2)
        equal(storage.add_event_to_subscribers(again, now=at(8)), False, "a known event id")
        equal(storage.get_event(event.id), event, "the event, unchanged")
        equal(len(storage.list_deliveries(event_id=event.id)), len(mine), "no new deliveries")
        lonely = make_event(type="user.created", tenant="acct_c")
        equal(storage.add_event_to_subscribers(lonely, now=at(9)), True, "no subscribers")
        equal(storage.list_deliveries(event_id=lonely.id), [], "an event nobody wants")

    def test_add_event_and_claim_stores_and_leases_what_it_may(self) -> None:
        storage = self.storage
        subscribed = [make_endpoint(tenant="acct_a", created_at=at(n)) for n in range(5)]
        for endpoint in (*subscribed, make_endpoint(tenant="acct_b")):
            storage.add_endpoint(endpoint)
        excluded = subscribed[0].id
        event = make_event(type="user.created", tenant="acct_a")
        stored, claims = storage.add_event_and_claim(
            event, now=at(7), lease_until=at(67), limit=3, exclude_endpoints=[excluded]
        )
        equal(stored, True, "add_event_and_claim() of a new event")
        equal(storage.get_event(event.id), event, "the event as stored")
        deliveries = {d.id: d for d in storage.list_deliveries(event_id=event.id)}
        equal(
            sorted(d.endpoint_id for d in deliveries.values()),
            sorted(e.id for e in subscribed),
            "one delivery per subscribed endpoint, as add_event_to_subscribers stores them",
        )
        equal(len(claims), 3, "claims: as many as the limit")
        equal(len({c.delivery.id for c in claims}), 3, "three different deliveries")
        by_id = {e.id: e for e in subscribed}
        for claim in claims:
            check(claim.delivery.endpoint_id != excluded, "an excluded endpoint is left alone")
            equal(deliveries[claim.delivery.id], claim.delivery, "Claim.delivery as stored")
            equal(claim.delivery.next_attempt_at, at(67), "a claimed delivery's lease end")
            equal(claim.delivery.attempt_count, 0, "a claimed new delivery's attempts")
            equal(claim.endpoint, by_id[claim.delivery.endpoint_id], "Claim.endpoint")
            equal((claim.event_type, claim.body), (event.type, event.body), "Claim's event")
        rest = storage.claim(now=at(8), lease_until=at(68), limit=10)
        equal(
            sorted(c.delivery.id for c in rest),
            sorted(set(deliveries) - {c.delivery.id for c in claims}),
            "the deliveries it did not lease stay due, the excluded endpoint's included",
        )
        claimed = claims[0]
        attempt, state = outcome(claimed, "succeeded", now=at(9))
        equal(storage.complete(claimed, attempt, state), True, "complete() under that lease")
        again = make_event(id=event.id, type="user.created", tenant="acct_a", n=2)
        equal(
            storage.add_event_and_claim(again, now=at(10), lease_until=at(70), limit=5),
            (False, []),
            "add_event_and_claim() of a known event id: nothing stored, nothing claimed",
        )
        other = make_event(type="user.created", tenant="acct_a", n=3)
        stored, claims = storage.add_event_and_claim(other, now=at(11), lease_until=at(71), limit=0)
        equal((stored, claims), (True, []), "limit=0: stored, nothing claimed")
        equal(len(storage.list_deliveries(event_id=other.id)), 5, "its deliveries, all due")

    def test_add_events_stores_a_batch_each_id_once(self) -> None:
        storage = self.storage
        endpoint = make_endpoint()
        storage.add_endpoint(endpoint)
        old = make_event(n=0)
        storage.add_event(old, [make_delivery(old, endpoint)])
        new = [make_event(n=n) for n in range(1, 4)]
        twice = make_event(n=9)
        batch = [
            (new[0], [make_delivery(new[0], endpoint)]),
            (old, [make_delivery(old, endpoint)]),  # stored already: nothing changes
            (new[1], []),
            (twice, [make_delivery(twice, endpoint)]),
            (twice, [make_delivery(twice, endpoint)]),  # the same id again in the batch
            (new[2], [make_delivery(new[2], endpoint), make_delivery(new[2], endpoint)]),
        ]
        equal(
            storage.add_events(batch),
            [True, False, True, True, False, True],
            "add_events(): which events were new",
        )
        for event in (*new, twice, old):
            equal(storage.get_event(event.id), event, "an event of the batch")
        stored = storage.list_deliveries()
        expected = [batch[0][1][0], batch[3][1][0], *batch[5][1]]
        equal(
            sorted(_ids(stored)),
            sorted(
                [
                    *(d.id for d in expected),
                    *(d.id for d in storage.list_deliveries(event_id=old.id)),
                ]
            ),
            "deliveries after add_events(): the new events' only, the first of a repeated id",
        )
        equal(len(storage.list_deliveries(event_id=old.id)), 1, "the stored event's deliveries")
        equal(len(storage.list_deliveries(event_id=twice.id)), 1, "a repeated id's deliveries")
        equal(storage.add_events([]), [], "add_events([])")

    def test_add_event_stores_all_or_nothing(self) -> None:
        storage = self.storage
        endpoint = make_endpoint()
        storage.add_endpoint(endpoint)
        event = make_event()
        good = make_delivery(event, endpoint)
        bad = make_delivery(event, make_endpoint(id="ep_never_stored"))
        with raises(UnknownEndpointError, "add_event() with a delivery to an unknown endpoint"):
            storage.add_event(event, [good, bad])
        with raises(UnknownEventError, "get_event() of an event whose add_event() failed"):
            storage.get_event(event.id)
        equal(storage.list_deliveries(), [], "deliveries after a failed add_event()")
        equal(storage.add_event(event, [good]), True, "add_event() after a failed one")

    def test_add_deliveries_to_a_stored_event(self) -> None:
        storage = self.storage
        [first] = store_events(storage, 1)
        endpoint = storage.get_endpoint(first.endpoint_id)
        event = storage.get_event(first.event_id)
        again = make_delivery(event, endpoint, due=at(10))
        storage.add_deliveries([again])
        equal(storage.get_delivery(again.id), again, "get_delivery() of an added delivery")
        equal(
            storage.list_deliveries(event_id=event.id),
            [first, again],
            "list_deliveries(event_id=...) after add_deliveries()",
        )

    def test_add_deliveries_checks_references(self) -> None:
        storage = self.storage
        [first] = store_events(storage, 1)
        endpoint = storage.get_endpoint(first.endpoint_id)
        event = storage.get_event(first.event_id)
        with raises(UnknownEventError, "add_deliveries() for an event never stored"):
            storage.add_deliveries([make_delivery(make_event(id="evt_missing"), endpoint)])
        with raises(UnknownEndpointError, "add_deliveries() for an endpoint never stored"):
            storage.add_deliveries([make_delivery(event, make_endpoint(id="ep_missing"))])
        equal(storage.list_deliveries(), [first], "deliveries after rejected add_deliveries()")

    def test_list_deliveries_filters_and_order(self) -> None:
        storage = self.storage
        one, two = make_endpoint(), make_endpoint()
        storage.add_endpoint(one)
        storage.add_endpoint(two)
        events = [make_event(n=n) for n in range(3)]
        # Stored out of creation order; ties keep the order they were stored in.
        late = make_delivery(events[0], one, created_at=at(5))
        early = make_delivery(events[0], two, created_at=at(1))
        tie_a = make_delivery(events[1], one, created_at=at(3))
        tie_b = make_delivery(events[1], two, created_at=at(3))
        last = make_delivery(events[2], one, created_at=at(9))
        storage.add_event(events[0], [late, early])
        storage.add_event(events[1], [tie_a, tie_b])
        storage.add_event(events[2], [last])
        [claim] = storage.claim(
            now=at(9), lease_until=at(9) + LEASE, limit=1, event_id=events[2].id
        )
        storage.complete(claim, *outcome(claim, "succeeded", now=at(10)))
        expected = [early.id, tie_a.id, tie_b.id, late.id, last.id]
        equal(_ids(storage.list_deliveries()), expected, "list_deliveries() (creation order)")
        equal(_ids(storage.list_deliveries(limit=2)), expected[:2], "list_deliveries(limit=2)")
        equal(
            _ids(storage.list_deliveries(event_id=events[0].id)),
            [early.id, late.id],
            "list_deliveries(event_id=...)",
        )
        equal(
            _ids(storage.list_deliveries(endpoint_id=one.id)),
            [tie_a.id, late.id, last.id],
            "list_deliveries(endpoint_id=...)",
        )
        equal(
            _ids(storage.list_deliveries(endpoint_id=one.id, status=DeliveryStatus.PENDING)),
            [tie_a.id, late.id],
            "list_deliveries(endpoint_id=..., status=PENDING)",
        )
        equal(
            _ids(storage.list_deliveries(status=DeliveryStatus.SUCCEEDED)),
            [last.id],
            "list_deliveries(status=SUCCEEDED)",
        )
        equal(
            _ids(storage.list_deliveries(event_id=events[1].id, endpoint_id=two.id, limit=5)),
            [tie_b.id],
            "list_deliveries(event_id=..., endpoint_id=..., limit=5)",
        )
        equal(storage.list_deliveries(event_id="evt_missing"), [], "unknown event_id filter")
        equal(storage.list_deliveries(status=DeliveryStatus.FAILED), [], "status=FAILED")

    def test_find_deliveries_filters_and_pages_by_keyset(self) -> None:
        storage = self.storage
        a1, a2 = make_endpoint(tenant="acct_a"), make_endpoint(tenant="acct_a")
        b1 = make_endpoint(tenant="acct_b")
        for endpoint in (a1, a2, b1):
            storage.add_endpoint(endpoint)
        made: list[Delivery] = []
        # Out of order, with ties of created_at (ordered by id) and two event types.
        for n, (seconds, kind) in enumerate(
            [(5, "user.created"), (1, "invoice.paid"), (3, "user.created"), (3, "user.deleted")]
        ):
            for tenant, endpoints in (("acct_a", (a1, a2)), ("acct_b", (b1,))):
                event = make_event(n=n, type=kind, tenant=tenant, created_at=at(seconds))
                deliveries = [make_delivery(event, e, created_at=at(seconds)) for e in endpoints]
                storage.add_event(event, deliveries)
                made.extend(deliveries)
        _finish(storage, made[0].event_id, {a1.id: "succeeded", a2.id: "failed"}, now=6)

        def key(d: Delivery) -> tuple[datetime, str]:
            return d.created_at, d.id

        everything = sorted((storage.get_delivery(d.id) for d in made), key=key)
        cases: list[tuple[DeliveryQuery, list[Delivery]]] = [
            (DeliveryQuery(), everything),
            (DeliveryQuery(tenant="acct_a"), [d for d in everything if d.tenant == "acct_a"]),
            (DeliveryQuery(endpoint_id=b1.id), [d for d in everything if d.endpoint_id == b1.id]),
            (
                DeliveryQuery(event_type="user.created", tenant="acct_a"),
                [d for d in everything if d.tenant == "acct_a" and d.event_type == "user.created"],
            ),
            (
                DeliveryQuery(status=DeliveryStatus.PENDING, endpoint_id=a1.id),
                [d for d in everything if d.endpoint_id == a1.id and d.status.value == "pending"],
            ),
            (
                DeliveryQuery(since=at(3), until=at(5)),
                [d for d in everything if at(3) <= d.created_at < at(5)],
            ),
            (DeliveryQuery(event_id=made[0].event_id), [made[0], made[1]]),
            (DeliveryQuery(tenant="acct_c"), []),
        ]
        for query, matching in cases:
            expected = [storage.get_delivery(d.id) for d in sorted(matching, key=key)]
            for newest_first in (False, True):
                want = expected[::-1] if newest_first else expected
                equal(
                    storage.find_deliveries(evolve(query, newest_first=newest_first, limit=50)),
                    want,
                    f"find_deliveries({query}, newest_first={newest_first}): one page",
                )
                pages: list[Delivery] = []
                page = evolve(query, newest_first=newest_first, limit=2)
                for _ in range(len(want) + 1):
                    got = storage.find_deliveries(page)
                    check(len(got) <= 2, f"find_deliveries(limit=2) returned {len(got)} rows")
                    pages.extend(got)
                    if len(got) < 2:
                        break
                    page = evolve(page, after=key(got[-1]))
                equal(
                    _ids(pages), _ids(want), f"every page of {query}, newest_first={newest_first}"
                )
        # A row added before the cursor's place does not shift the pages after it.
        first = storage.find_deliveries(DeliveryQuery(tenant="acct_b", limit=2))
        event = make_event(tenant="acct_b", created_at=at(0))
        storage.add_event(event, [make_delivery(event, b1, created_at=at(0))])
        rest = storage.find_deliveries(
            DeliveryQuery(tenant="acct_b", limit=50, after=key(first[-1]))
        )
        equal(
            _ids(first + rest),
            [d.id for d in everything if d.tenant == "acct_b"],
            "pages after a row was added before the cursor",
        )

    def test_find_endpoints_pages_a_tenants_endpoints(self) -> None:
        storage = self.storage
        mine = [make_endpoint(tenant="acct_a", created_at=at(n % 3)) for n in range(5)]
        theirs = make_endpoint(tenant="acct_b")
        for endpoint in [*mine, theirs]:
            storage.add_endpoint(endpoint)
        gone = make_endpoint(tenant="acct_a")
        storage.add_endpoint(gone)
        listed = [*mine, theirs]
        try:
            storage.delete_endpoint(gone.id, now=at(1))
        except InvalidStateError:  # a backend that cannot delete: the other tenant's
            storage.update_endpoint(evolve(gone, tenant="acct_gone"))
            listed.append(gone)
        want = sorted(mine, key=lambda e: (e.created_at, e.id))
        got: list[Endpoint] = []
        query = EndpointQuery(tenant="acct_a", limit=2)
        for _ in range(5):
            page = storage.find_endpoints(query)
            got.extend(page)
            if len(page) < 2:
                break
            query = evolve(query, after=(page[-1].created_at, page[-1].id))
        equal(got, want, "find_endpoints(tenant=...) page by page")
        equal(
            [e.id for e in storage.find_endpoints(EndpointQuery(limit=50))],
            [e.id for e in sorted(listed, key=lambda e: (e.created_at, e.id))],
            "find_endpoints() of every tenant",
        )

    # Claims -------------------------------------------------------------------------

    def test_claim_leases_a_due_delivery(self) -> None:
        storage = self.storage
        [delivery] = store_events(storage, 1)
        endpoint = storage.get_endpoint(delivery.endpoint_id)
        event = storage.get_event(delivery.event_id)
        claim = _claim_one(storage, now=1)
        equal(claim.delivery, evolve(delivery, next_attempt_at=at(1) + LEASE), "Claim.delivery")
        _check_delivery_times(claim.delivery)
        equal(claim.endpoint, endpoint, "Claim.endpoint")
        equal(claim.event_type, event.type, "Claim.event_type")
        equal(claim.body, event.body, "Claim.body")
        check(isinstance(claim.lease, str) and claim.lease, "Claim.lease must be a non-empty str")
        equal(storage.get_delivery(delivery.id), claim.delivery, "get_delivery() after claim()")

    def test_claim_takes_only_due_deliveries_up_to_limit(self) -> None:
        storage = self.storage
        endpoint = make_endpoint()
        storage.add_endpoint(endpoint)
        store_events(storage, 3, endpoint=endpoint, due=at(10))
        equal(storage.claim(now=at(9.999999), lease_until=at(70), limit=5), [], "not yet due")
        equal(len(storage.claim(now=at(10), lease_until=at(70), limit=2)), 2, "limit=2")
        equal(len(storage.claim(now=at(10), lease_until=at(70), limit=5)), 1, "the rest")
        equal(storage.claim(now=at(10), lease_until=at(70), limit=5), [], "all leased")

    def test_a_claim_without_room_takes_nothing(self) -> None:
        storage = self.storage
        one, two = make_endpoint(), make_endpoint()
        storage.add_endpoint(one)
        storage.add_endpoint(two)
        event = make_event()
        deliveries = [make_delivery(event, one), make_delivery(event, two)]
        storage.add_event(event, deliveries)
        for limit in (0, -1):
            equal(storage.claim(now=BASE, lease_until=at(60), limit=limit), [], f"{limit=}")
            equal(
                storage.claim(now=BASE, lease_until=at(60), limit=limit, event_id=event.id),
                [],
                f"{limit=}, event_id=...",
            )
        equal(storage.list_deliveries(), deliveries, "the deliveries after those claims")

    def test_claims_take_the_earliest_due_first(self) -> None:
        storage = self.storage
        endpoint = make_endpoint()
        storage.add_endpoint(endpoint)
        by_due = {}
        for n in (5, 2, 8, 0, 9, 1, 7, 3, 6, 4):
            event = make_event(n=n)
            delivery = make_delivery(event, endpoint, due=at(n), created_at=at(-n))
            storage.add_event(event, [delivery])
            by_due[n] = delivery.id
        for limit, wanted in ((1, [0]), (3, [1, 2, 3]), (4, [4, 5, 6, 7])):
            claims = storage.claim(now=at(100), lease_until=at(100) + LEASE, limit=limit)
            equal(
                sorted(c.delivery.id for c in claims),
                sorted(by_due[n] for n in wanted),
                f"claim(limit={limit}) must take the earliest-due deliveries",
            )

    def test_claim_carries_the_endpoint_as_stored_now(self) -> None:
        storage = self.storage
        [delivery] = store_events(storage, 1)
        endpoint = storage.get_endpoint(delivery.endpoint_id)
        moved = evolve(endpoint, url="https://moved.example/hooks")
        storage.update_endpoint(moved)
        equal(_claim_one(storage).endpoint, moved, "Claim.endpoint after update_endpoint()")

    def test_leased_delivery_waits_for_its_lease_to_end(self) -> None:
        storage = self.storage
        [delivery] = store_events(storage, 1)
        first = _claim_one(storage)
        equal(
            storage.claim(now=at(59.999999), lease_until=at(120), limit=5),
            [],
            "claim() while another lease holds",
        )
        equal(storage.next_due_at(), at(60), "next_due_at() counts a leased delivery at lease end")
        equal(storage.next_due_at(event_id=delivery.event_id), at(60), "next_due_at(event_id)")
        second = _claim_one(storage, now=60)
        equal(second.delivery.id, delivery.id, "the delivery claimed after the lease ended")
        check(second.lease != first.lease, "a new claim must carry a new lease token")
        equal(second.delivery.next_attempt_at, at(60) + LEASE, "next_attempt_at of the new lease")

    def test_a_released_lease_is_due_again_and_a_stale_release_changes_nothing(self) -> None:
        storage = self.storage
        endpoint = make_endpoint()
        storage.add_endpoint(endpoint)
        kept, given, done = store_events(storage, 3, endpoint=endpoint, due=at(0))
        claims = {c.delivery.id: c for c in storage.claim(now=at(1), lease_until=at(61), limit=3)}
        equal(sorted(claims), sorted([kept.id, given.id, done.id]), "the three claimed")
        storage.complete(claims[done.id], *outcome(claims[done.id], "succeeded", now=at(2)))
        storage.release([claims[given.id], claims[done.id]], due=at(3))
        equal(storage.get_delivery(done.id).status, DeliveryStatus.SUCCEEDED, "a finished one")
        released = storage.get_delivery(given.id)
        if released.next_attempt_at == at(61):
            skip(
                f"{type(storage).__name__} does not release leases (Storage.release's"
                " default): released deliveries wait for their leases to end"
            )
        equal(released.next_attempt_at, at(3), "next_attempt_at of a released delivery")
        equal(released.status, DeliveryStatus.PENDING, "status of a released delivery")
        again = storage.claim(now=at(3), lease_until=at(63), limit=3)
        equal([c.delivery.id for c in again], [given.id], "claim() after release()")
        # The first lease is stale now: releasing it again leaves the new one alone.
        storage.release([claims[given.id]], due=at(4))
        equal(storage.claim(now=at(4), lease_until=at(64), limit=3), [], "after a stale release")
        equal(storage.get_delivery(given.id).next_attempt_at, at(63), "the new lease's end")
        check(
            storage.complete(again[0], *outcome(again[0], "succeeded", now=at(5))),
            "the new lease holds",
        )

    def test_claims_serve_tenants_in_turn_not_by_backlog(self) -> None:
        # Tenant A's burst is due first, B's few deliveries and C's later. Earliest
        # due first would give A the whole claim; in turn, each tenant gets a third
        # of it: its own earliest (round robin, earliest due within each tenant).
        storage = self.storage
        a, b, c = (make_endpoint(tenant=f"acct_{name}") for name in "abc")
        for endpoint in (a, b, c):
            storage.add_endpoint(endpoint)
        burst = _store_due(storage, a, [n * 0.01 for n in range(50)])
        few = _store_due(storage, b, [10.0 + n for n in range(5)])
        later = _store_due(storage, c, [20.0 + n for n in range(20)])
        claims = storage.claim(now=at(100), lease_until=at(160), limit=15)
        equal(
            sorted(claim.delivery.id for claim in claims),
            sorted(_ids(burst[:5] + few + later[:5])),
            "claim(limit=15) with acct_a's 50 due first, then acct_b's 5 and acct_c's 20:"
            " 5 of each, each tenant's earliest (in turn, not the earliest due overall)",
        )
        # Limit 1 again and again (a worker's next delivery): the two tenants with
        # due work left alternate.
        taken = [storage.claim(now=at(100), lease_until=at(160), limit=1) for _ in range(4)]
        equal([len(batch) for batch in taken], [1, 1, 1, 1], "claim(limit=1), four times")
        tenants = [batch[0].delivery.tenant for batch in taken]
        check(
            sorted(tenants) == ["acct_a", "acct_a", "acct_c", "acct_c"]
            and tenants[0] != tenants[1] != tenants[2] != tenants[3],
            "claims of 1 must alternate between the tenants with due work left (acct_a and"
            f" acct_c; acct_b has none), not go {tenants}",
        )
        equal(
            {batch[0].delivery.id for batch in taken},
            set(_ids(burst[5:7] + later[5:7])),
            "claims of 1 take each tenant's next earliest due",
        )
        # However the turns go, a claim with room for all that is due takes it all.
        rest = storage.claim(now=at(100), lease_until=at(160), limit=100)
        equal(len(rest), 43 + 13, "claim(limit=100) of the 56 due deliveries left")

    def test_complete_many_claims_tenants_in_turn_as_claim_does(self) -> None:
        # A group's next deliveries take the same turns: acct_a's burst, due first
        # and served last, does not crowd out acct_b's few.
        storage = self.storage
        a, b = make_endpoint(tenant="acct_a"), make_endpoint(tenant="acct_b")
        for endpoint in (a, b):
            storage.add_endpoint(endpoint)
        burst = _store_due(storage, a, [n * 0.01 for n in range(20)])
        few = _store_due(storage, b, [10.0 + n for n in range(3)])
        [first] = storage.claim(now=at(100), lease_until=at(160), limit=1)
        equal(first.delivery.id, burst[0].id, "claim(limit=1): acct_a's earliest, first in turn")
        completion = (first, *outcome(first, "succeeded", now=at(101), retry_at=at(200)))
        held, claims = storage.complete_many(
            [completion], now=at(101), lease_until=at(161), limit=6
        )
        equal(held, [True], "complete_many() of the claimed delivery")
        equal(
            sorted(c.delivery.id for c in claims),
            sorted(_ids(burst[1:4] + few)),
            "complete_many(limit=6) after acct_a was served: 3 of each tenant, acct_b's 3"
            " and acct_a's next 3 (in turn, not acct_a's 6 earliest due)",
        )

    def test_claims_in_turn_leave_excluded_and_disabled_endpoints_alone(self) -> None:
        storage = self.storage
        a_held, a_free = make_endpoint(tenant="acct_a"), make_endpoint(tenant="acct_a")
        b_free, b_off = make_endpoint(tenant="acct_b"), make_endpoint(tenant="acct_b")
        for endpoint in (a_held, a_free, b_free, b_off):
            storage.add_endpoint(endpoint)
        held = _store_due(storage, a_held, [n * 0.01 for n in range(10)])
        a_rest = _store_due(storage, a_free, [5.0 + n for n in range(5)])
        parked = _store_due(storage, b_off, [n * 0.01 for n in range(5)])
        b_rest = _store_due(storage, b_free, [7.0 + n for n in range(5)])
        storage.update_endpoint(evolve(b_off, enabled=False))
        claims = storage.claim(
            now=at(100), lease_until=at(160), limit=6, exclude_endpoints={a_held.id}
        )
        equal(
            sorted(c.delivery.id for c in claims),
            sorted(_ids(a_rest[:3] + b_rest[:3])),
            "claim(limit=6) in turn, acct_a's earliest endpoint excluded and acct_b's disabled:"
            " the 3 earliest of each tenant's other endpoint",
        )
        claims = storage.claim(
            now=at(100), lease_until=at(160), limit=20, exclude_endpoints=[a_held.id]
        )
        equal(
            sorted(c.delivery.id for c in claims),
            sorted(_ids(a_rest[3:] + b_rest[3:])),
            "a second claim takes the rest of what may be claimed",
        )
        for delivery in (*held, *parked):
            equal(storage.get_delivery(delivery.id), delivery, "excluded or parked: untouched")
        storage.update_endpoint(evolve(b_off, enabled=True))
        claims = storage.claim(now=at(100), lease_until=at(160), limit=20)
        equal(
            sorted(c.delivery.id for c in claims),
            sorted(_ids(held + parked)),
            "after enabling the endpoint and excluding none: the excluded and the parked",
        )

    # Completing ---------------------------------------------------------------------

    def test_complete_stores_the_attempt_and_the_delivery(self) -> None:
        storage = self.storage
        deliveries = store_events(storage, 3)
        claims = {c.delivery.id: c for c in storage.claim(now=BASE, lease_until=at(60), limit=3)}
        results: tuple[Result, ...] = ("succeeded", "retry", "failed")
        for delivery, result in zip(deliveries, results, strict=True):
            claim = claims[delivery.id]
            attempt, updated = outcome(claim, result, now=at(1), retry_at=at(31.5))
            equal(storage.complete(claim, attempt, updated), True, f"complete() ({result})")
            stored = storage.get_delivery(delivery.id)
            equal(stored, updated, f"get_delivery() after complete() ({result})")
            _check_delivery_times(stored)
            [recorded] = storage.list_attempts(delivery.id)
            equal(recorded, attempt, f"list_attempts() after complete() ({result})")
            utc(recorded.started_at, "Attempt.started_at")

    def test_complete_after_the_lease_was_lost_records_only_the_attempt(self) -> None:
        storage = self.storage
        [delivery] = store_events(storage, 1)
        first = _claim_one(storage)
        second = _claim_one(storage, now=61)
        late_attempt, late_state = outcome(first, "succeeded", now=at(62))
        equal(
            storage.complete(first, late_attempt, late_state), False, "complete() of a lost lease"
        )
        equal(storage.get_delivery(delivery.id), second.delivery, "state after a lost lease")
        equal(storage.list_attempts(delivery.id), [late_attempt], "attempts after a lost lease")
        attempt, state = outcome(second, "retry", now=at(63), retry_at=at(90))
        equal(storage.complete(second, attempt, state), True, "complete() of the current lease")
        equal(storage.get_delivery(delivery.id), state, "state after the current holder's complete")

    def test_complete_after_expiry_without_a_new_claim_succeeds(self) -> None:
        storage = self.storage
        [delivery] = store_events(storage, 1)
        claim = _claim_one(storage)
        attempt, state = outcome(claim, "succeeded", now=at(500))
        equal(storage.complete(claim, attempt, state), True, "complete() of an expired lease")
        equal(storage.get_delivery(delivery.id).status, DeliveryStatus.SUCCEEDED, "status")

    def test_a_lease_completes_only_once(self) -> None:
        storage = self.storage
        [delivery] = store_events(storage, 1)
        claim = _claim_one(storage)
        attempt, state = outcome(claim, "retry", now=at(1), retry_at=at(10))
        equal(storage.complete(claim, attempt, state), True, "first complete()")
        again, other = outcome(claim, "succeeded", now=at(2))
        equal(storage.complete(claim, again, other), False, "second complete() of one lease")
        equal(storage.get_delivery(delivery.id), state, "state after a second complete()")
        equal(len(storage.list_attempts(delivery.id)), 2, "both attempts are recorded")

    def test_a_retry_is_claimed_when_due_with_a_new_lease(self) -> None:
        storage = self.storage
        [delivery] = store_events(storage, 1)
        claim = _claim_one(storage)
        storage.complete(claim, *outcome(claim, "retry", now=at(1), retry_at=at(30)))
        equal(storage.next_due_at(), at(30), "next_due_at() of a scheduled retry")
        equal(storage.claim(now=at(29), lease_until=at(89), limit=5), [], "retry not yet due")
        retry = _claim_one(storage, now=30)
        check(retry.lease != claim.lease, "a retry must be claimed with a new lease token")
        equal(retry.delivery.attempt_count, 1, "attempt_count of the claimed retry")
        attempt, state = outcome(retry, "succeeded", now=at(31))
        equal(storage.complete(retry, attempt, state), True, "complete() of the retry")
        equal([a.number for a in storage.list_attempts(delivery.id)], [1, 2], "attempt numbers")

    def test_final_deliveries_are_never_claimed_again(self) -> None:
        storage = self.storage
        store_events(storage, 2)
        claims = storage.claim(now=BASE, lease_until=at(60), limit=2)
        results: tuple[Result, ...] = ("succeeded", "failed")
        for claim, result in zip(claims, results, strict=True):
            storage.complete(claim, *outcome(claim, result, now=at(1)))
        far = at(10**7)
        equal(storage.claim(now=far, lease_until=far + LEASE, limit=5), [], "claim() of finals")
        equal(storage.next_due_at(), None, "next_due_at() with only final deliveries")

    def test_final_deliveries_count_the_endpoints_failures_in_a_row(self) -> None:
        storage = self.storage
        store_events(storage, 4)
        [endpoint] = storage.list_endpoints()
        equal(endpoint.consecutive_failures, 0, "consecutive_failures of a new endpoint")
        results: tuple[Result, ...] = ("failed", "failed", "succeeded", "failed")
        expected = (1, 2, 0, 1)
        for n, (result, count) in enumerate(zip(results, expected, strict=True)):
            [claim] = storage.claim(now=at(n), lease_until=at(n) + LEASE, limit=1)
            storage.complete(claim, *outcome(claim, result, now=at(n)))
            equal(
                storage.get_endpoint(endpoint.id).consecutive_failures,
                count,
                f"consecutive_failures after deliveries ending {results[: n + 1]}",
            )

    def test_complete_many_records_each_as_complete_would_and_claims_the_next(self) -> None:
        storage = self.storage
        deliveries = store_events(storage, 6)
        claims = {c.delivery.id: c for c in storage.claim(now=BASE, lease_until=at(60), limit=4)}
        lost = claims[deliveries[3].id]
        [taken] = storage.claim(  # its lease ran out: claimed again
            now=at(61), lease_until=at(121), limit=1, event_id=lost.delivery.event_id
        )
        results: tuple[Result, ...] = ("succeeded", "retry", "failed", "succeeded")
        completions = [
            (claims[d.id], *outcome(claims[d.id], r, now=at(62), retry_at=at(90)))
            for d, r in zip(deliveries[:4], results, strict=True)
        ]
        held, next_claims = storage.complete_many(
            completions, now=at(62), lease_until=at(122), limit=5
        )
        equal(held, [True, True, True, False], "complete_many() result: the 4th lease was lost")
        for claim, attempt, state in completions[:3]:
            equal(storage.get_delivery(claim.delivery.id), state, "delivery after complete_many()")
            equal(storage.list_attempts(claim.delivery.id), [attempt], "attempts")
        equal(storage.get_delivery(lost.delivery.id), taken.delivery, "the lost lease's delivery")
        equal(
            sorted(c.delivery.id for c in next_claims),
            sorted(_ids(deliveries[4:])),
            "complete_many(limit=5) claims what is due: the 2 never claimed",
        )
        for claim in next_claims:
            equal(claim.delivery.next_attempt_at, at(122), "a claim's lease end")
        held, none = storage.complete_many([], now=at(63), lease_until=at(123), limit=0)
        equal((held, none), ([], []), "complete_many() of nothing, limit=0")
        # Nothing to record, a claim to make: as claim() would (the retry, due at 90).
        held, [retried] = storage.complete_many([], now=at(91), lease_until=at(151), limit=5)
        equal(held, [], "complete_many() of nothing, limit=5: nothing held")
        equal(retried.delivery.id, deliveries[1].id, "complete_many() of nothing claims")
        equal(retried.delivery.next_attempt_at, at(151), "its lease end")

    def test_complete_many_keeps_every_character_and_byte_it_records(self) -> None:
        # What a receiver answered goes back exactly: texts with the characters an
        # encoding of arrays or lists could trip on, bodies of every byte. Two
        # groups, the second claiming while two tenants have due work (a claim in
        # turn: PostgreSQL sends that group's statement otherwise).
        storage = self.storage
        a, b = make_endpoint(tenant="acct_a"), make_endpoint(tenant="acct_b")
        for endpoint in (a, b):
            storage.add_endpoint(endpoint)
        texts = [
            'a "quoted" \\ backslash \\" and {braces}, commas',
            "NULL",
            "",
            " spaced \t\n ",
            "ünïcödé ✓ 𝄞",
            "\\x00ff",
        ]
        bodies = [bytes(range(256)), b"", b'{"a": "\\\\"}', b"NULL", b"\\x", b"\x00"]
        # A transport may read into a bytearray: stored, and read back, as its bytes.
        kinds = [bytes, bytes, bytearray, bytes, memoryview, bytes]
        _store_due(storage, a, [n * 0.01 for n in range(8)])
        _store_due(storage, b, [0.5 + n for n in range(5)])
        claims = storage.claim(now=at(100), lease_until=at(160), limit=9)
        equal(len(claims), 9, "claim(limit=9) of 13 due")
        completions = []
        for n, claim in enumerate(claims):
            attempt, state = outcome(claim, "retry", now=at(101), retry_at=at(102))
            body = kinds[n % 6](bodies[n % 6])
            attempt = evolve(attempt, error=texts[n % 6], response_body=body)
            completions.append((claim, attempt, evolve(state, last_error=texts[-1 - n % 6])))
        for group, limit in ((completions[:4], 0), (completions[4:], 4)):
            held, _ = storage.complete_many(group, now=at(101), lease_until=at(161), limit=limit)
            equal(held, [True] * len(group), f"complete_many(limit={limit}) of {len(group)}")
        for claim, attempt, state in completions:
            stored = evolve(attempt, response_body=bytes(attempt.response_body or b""))
            equal(storage.list_attempts(claim.delivery.id), [stored], "the attempt, as recorded")
            equal(storage.get_delivery(claim.delivery.id), state, "the delivery, as recorded")

    def test_complete_many_counts_failures_in_a_row_in_order(self) -> None:
        storage = self.storage
        store_events(storage, 7)
        [endpoint] = storage.list_endpoints()
        claims = storage.claim(now=BASE, lease_until=at(60), limit=7)
        groups: tuple[tuple[Result, ...], ...] = (
            ("failed", "failed"),
            ("failed", "succeeded", "failed"),
            ("retry", "failed"),
        )
        expected = (2, 1, 2)
        for n, (group, count) in enumerate(zip(groups, expected, strict=True)):
            taken, claims = claims[: len(group)], claims[len(group) :]
            completions = [
                (claim, *outcome(claim, result, now=at(n + 1), retry_at=at(100)))
                for claim, result in zip(taken, group, strict=True)
            ]
            held, _ = storage.complete_many(completions, now=at(n + 1), lease_until=at(61))
            equal(held, [True] * len(group), f"complete_many() of {group}")
            equal(
                storage.get_endpoint(endpoint.id).consecutive_failures,
                count,
                f"consecutive_failures after groups {groups[: n + 1]} (a retry counts nothing)",
            )

    def test_attempts_are_listed_by_number(self) -> None:
        storage = self.storage
        [delivery] = store_events(storage, 1)
        claim = _claim_one(storage)
        # A stale lease records its attempt anyway, whatever its number.
        for number in (3, 1, 2):
            storage.complete(claim, *outcome(claim, "retry", now=at(number), number=number))
        equal(
            [a.number for a in storage.list_attempts(delivery.id)],
            [1, 2, 3],
            "list_attempts() order",
        )

    # Endpoints that are disabled or held back ---------------------------------------

    def test_disabled_endpoints_are_skipped_until_enabled(self) -> None:
        storage = self.storage
        off, on = make_endpoint(), make_endpoint()
        storage.add_endpoint(off)
        storage.add_endpoint(on)
        [waiting] = store_events(storage, 1, endpoint=off, due=at(5))
        [other] = store_events(storage, 1, endpoint=on, due=at(20))
        storage.update_endpoint(evolve(off, enabled=False))
        equal(storage.next_due_at(), at(20), "next_due_at() skips a disabled endpoint")
        equal(storage.next_due_at(event_id=waiting.event_id), None, "next_due_at(event_id)")
        claims = storage.claim(now=at(30), lease_until=at(90), limit=5)
        equal([c.delivery.id for c in claims], [other.id], "claim() skips a disabled endpoint")
        equal(
            storage.claim(now=at(30), lease_until=at(90), limit=5, event_id=waiting.event_id),
            [],
            "claim(event_id=...) skips a disabled endpoint",
        )
        equal(storage.get_delivery(waiting.id), waiting, "a waiting delivery is left unchanged")
        storage.update_endpoint(evolve(off, enabled=True))
        equal(storage.next_due_at(), at(5), "next_due_at() after enabling (as scheduled)")
        claims = storage.claim(now=at(30), lease_until=at(90), limit=5)
        equal([c.delivery.id for c in claims], [waiting.id], "claim() after enabling")

    def test_disabling_an_endpoint_does_not_break_a_lease(self) -> None:
        storage = self.storage
        [delivery] = store_events(storage, 1)
        claim = _claim_one(storage)
        storage.update_endpoint(evolve(claim.endpoint, enabled=False))
        attempt, state = outcome(claim, "retry", now=at(1), retry_at=at(10))
        equal(storage.complete(claim, attempt, state), True, "complete() after disabling")
        equal(storage.get_delivery(delivery.id), state, "state after complete()")
        equal(storage.next_due_at(), None, "next_due_at() with the endpoint disabled")

    def test_claim_leaves_excluded_endpoints_alone(self) -> None:
        storage = self.storage
        slow, fast, third = make_endpoint(), make_endpoint(), make_endpoint()
        for endpoint in (slow, fast, third):
            storage.add_endpoint(endpoint)
        held = store_events(storage, 2, endpoint=slow, due=at(0))
        [free] = store_events(storage, 1, endpoint=fast, due=at(1))
        [also_held] = store_events(storage, 1, endpoint=third, due=at(0.5))
        claims = storage.claim(
            now=at(2), lease_until=at(62), limit=5, exclude_endpoints={slow.id, third.id}
        )
        equal([c.delivery.id for c in claims], [free.id], "claim(exclude_endpoints=...)")
        equal(storage.next_due_at(), at(0), "excluded deliveries stay due")
        for delivery in (*held, also_held):
            equal(storage.get_delivery(delivery.id), delivery, "an excluded delivery is untouched")
        equal(
            len(storage.claim(now=at(2), lease_until=at(62), limit=5, exclude_endpoints=[])),
            3,
            "claim() without exclusions afterwards",
        )

    def test_claim_and_next_due_at_for_one_event(self) -> None:
        storage = self.storage
        one, two = make_endpoint(), make_endpoint()
        storage.add_endpoint(one)
        storage.add_endpoint(two)
        early = store_events(storage, 2, endpoint=one, due=at(0))
        event = make_event()
        mine = [make_delivery(event, one, due=at(3)), make_delivery(event, two, due=at(4))]
        storage.add_event(event, mine)
        equal(storage.next_due_at(), at(0), "next_due_at()")
        equal(storage.next_due_at(event_id=event.id), at(3), "next_due_at(event_id=...)")
        equal(storage.next_due_at(event_id="evt_missing"), None, "next_due_at(unknown event)")
        claims = storage.claim(now=at(3.5), lease_until=at(60), limit=5, event_id=event.id)
        equal([c.delivery.id for c in claims], [mine[0].id], "claim(event_id=...) when due")
        claims = storage.claim(now=at(4), lease_until=at(64), limit=5, event_id=event.id)
        equal([c.delivery.id for c in claims], [mine[1].id], "claim(event_id=...) later")
        equal(storage.next_due_at(event_id=event.id), at(60), "next_due_at(event_id) leased")
        for delivery in early:
            equal(storage.get_delivery(delivery.id), delivery, "other events are untouched")

    def test_pending_by_endpoint_counts_the_largest_backlogs(self) -> None:
        storage = self.storage
        one, two, three = make_endpoint(), make_endpoint(), make_endpoint()
        for endpoint in (one, two, three):
            storage.add_endpoint(endpoint)
        store_events(storage, 3, endpoint=one)
        store_events(storage, 2, endpoint=two)
        done = store_events(storage, 1, endpoint=three)[0]
        [claim] = storage.claim(
            now=at(0), lease_until=at(0) + LEASE, limit=1, event_id=done.event_id
        )
        storage.complete(claim, *outcome(claim, "succeeded", now=at(1)))
        leased = storage.claim(now=at(2), lease_until=at(2) + LEASE, limit=1)  # still counts
        equal(len(leased), 1, "a claim of one")
        equal(
            storage.pending_by_endpoint(limit=10),
            [(one.id, 3), (two.id, 2)],
            "pending_by_endpoint(): largest first, leased ones counted, none for finished",
        )
        equal(storage.pending_by_endpoint(limit=1), [(one.id, 3)], "pending_by_endpoint(limit=1)")

    # Deletion -----------------------------------------------------------------------

    def test_deleting_an_endpoint_cancels_its_work_and_keeps_its_history(self) -> None:
        storage = self.storage
        doomed, other = make_endpoint(events=("*",)), make_endpoint(events=("*",))
        storage.add_endpoint(doomed)
        storage.add_endpoint(other)
        done, retrying, leased, new = (
            store_events(storage, 1, endpoint=doomed)[0] for _ in range(4)
        )
        others = store_events(storage, 2, endpoint=other)
        _finish(storage, done.event_id, {doomed.id: "succeeded"}, now=0)
        _finish(storage, retrying.event_id, {doomed.id: "retry"}, now=0)
        [in_flight] = storage.claim(
            now=at(1), lease_until=at(1) + LEASE, limit=1, event_id=leased.event_id
        )
        done_attempts = storage.list_attempts(done.id)
        retry_attempts = storage.list_attempts(retrying.id)
        before = {d.id: d for d in storage.list_deliveries()}
        try:
            cancelled = storage.delete_endpoint(doomed.id, now=at(5))
        except InvalidStateError as exc:
            skip(str(exc))
        equal(cancelled, 3, "delete_endpoint() returns the deliveries it cancelled")
        with raises(UnknownEndpointError, "get_endpoint() of a deleted endpoint"):
            storage.get_endpoint(doomed.id)
        equal(_ids_of(storage.list_endpoints()), [other.id], "list_endpoints() after delete")
        equal(
            _ids_of(storage.endpoints_for(DEFAULT_TENANT, "user.created")),
            [other.id],
            "endpoints_for() after delete",
        )
        for delivery in (retrying, leased, new):
            got = storage.get_delivery(delivery.id)
            equal(got.status, DeliveryStatus.CANCELLED, "a pending delivery's status after delete")
            equal(got.next_attempt_at, None, "a cancelled delivery's next_attempt_at")
            equal(got.updated_at, at(5), "a cancelled delivery's updated_at")
            check(bool(got.last_error), "a cancelled delivery says why (last_error)")
            equal(got.endpoint_id, doomed.id, "a cancelled delivery still names its endpoint")
        equal(storage.get_delivery(done.id), before[done.id], "a finished delivery, unchanged")
        equal(storage.list_attempts(done.id), done_attempts, "attempts of a finished delivery")
        equal(storage.list_attempts(retrying.id), retry_attempts, "attempts of a cancelled one")
        for delivery in others:
            equal(storage.get_delivery(delivery.id), before[delivery.id], "another endpoint's")
        # A worker still sending a cancelled delivery records its attempt, loses the lease.
        held = storage.complete(in_flight, *outcome(in_flight, "succeeded", now=at(6)))
        equal(held, False, "complete() of a delivery cancelled while leased")
        equal(len(storage.list_attempts(leased.id)), 1, "its attempt is recorded")
        equal(
            storage.get_delivery(leased.id).status,
            DeliveryStatus.CANCELLED,
            "a cancelled delivery stays cancelled after a late complete()",
        )
        far = at(10**6)
        claims = storage.claim(now=far, lease_until=far + LEASE, limit=10)
        equal(
            sorted(c.delivery.id for c in claims),
            sorted(_ids(others)),
            "claim() after delete takes only the other endpoint's deliveries",
        )
        with raises(UnknownEndpointError, "delete_endpoint() of a deleted endpoint"):
            storage.delete_endpoint(doomed.id, now=at(7))
        with raises(UnknownEndpointError, "update_endpoint() of a deleted endpoint"):
            storage.update_endpoint(evolve(doomed, enabled=True))
        with raises(InvalidInputError, "add_endpoint() with a deleted endpoint's id"):
            storage.add_endpoint(doomed)
        with raises(UnknownEndpointError, "delete_endpoint() of an unknown id"):
            storage.delete_endpoint("ep_missing", now=at(7))

    def test_prune_deletes_old_cancelled_deliveries(self) -> None:
        storage = self.storage
        endpoint = make_endpoint()
        storage.add_endpoint(endpoint)
        [delivery] = store_events(storage, 1, endpoint=endpoint)
        try:
            storage.delete_endpoint(endpoint.id, now=at(5))
        except InvalidStateError as exc:
            skip(str(exc))
        equal(sum(_prune_all(storage, older_than=at(100))), 2, "a cancelled delivery and event")
        with raises(UnknownDeliveryError, "get_delivery() of a pruned cancelled delivery"):
            storage.get_delivery(delivery.id)

    # Retention ----------------------------------------------------------------------

    def test_a_stale_workers_complete_after_prune_records_nothing(self) -> None:
        storage = self.storage
        stale = store_events(storage, 1)[0]
        taken_over = _claim_one(storage, now=0)
        fresh = _claim_one(storage, now=LEASE.total_seconds() + 1)  # the first lease ran out
        storage.complete(fresh, *outcome(fresh, "succeeded", now=at(70)))
        _prune_all(storage, older_than=at(1000))
        with raises(UnknownDeliveryError, "get_delivery() of a pruned delivery"):
            storage.get_delivery(stale.id)
        held = storage.complete(taken_over, *outcome(taken_over, "failed", now=at(71)))
        equal(held, False, "complete() by a stale worker after its delivery was pruned")

    def test_complete_many_with_a_pruned_delivery_records_the_others(self) -> None:
        storage = self.storage
        store_events(storage, 1)
        stale = _claim_one(storage, now=0)
        fresh = _claim_one(storage, now=61)  # the stale lease ran out: taken over...
        storage.complete(fresh, *outcome(fresh, "succeeded", now=at(62)))
        _prune_all(storage, older_than=at(1000))  # ...finished and pruned
        store_events(storage, 2)
        others = storage.claim(now=at(63), lease_until=at(123), limit=2)
        results: tuple[Result, ...] = ("succeeded", "failed", "succeeded")
        completions = [
            (claim, *outcome(claim, result, now=at(64)))
            for claim, result in zip([others[0], stale, others[1]], results, strict=True)
        ]
        held, _ = storage.complete_many(completions, now=at(64), lease_until=at(124))
        equal(held, [True, False, True], "complete_many() with a pruned delivery in the group")
        for claim, attempt, state in (completions[0], completions[2]):
            equal(storage.get_delivery(claim.delivery.id), state, "the others are recorded")
            equal(storage.list_attempts(claim.delivery.id), [attempt], "their attempts")

    def test_prune_deletes_old_finished_work_and_keeps_the_rest(self) -> None:
        storage = self.storage
        one, two = make_endpoint(), make_endpoint()
        storage.add_endpoint(one)
        storage.add_endpoint(two)
        events = {
            name: make_event(created_at=at(200) if name == "new_lonely" else BASE)
            for name in ("done", "failed", "mixed", "recent", "waiting", "lonely", "new_lonely")
        }
        storage.add_event(events["done"], [make_delivery(events["done"], one)])
        storage.add_event(events["failed"], [make_delivery(events["failed"], one)])
        mixed = [make_delivery(events["mixed"], one), make_delivery(events["mixed"], two)]
        storage.add_event(events["mixed"], mixed)
        storage.add_event(events["recent"], [make_delivery(events["recent"], one)])
        [waiting] = [make_delivery(events["waiting"], two)]
        storage.add_event(events["waiting"], [waiting])
        storage.add_event(events["lonely"], [])
        storage.add_event(events["new_lonely"], [])
        _finish(storage, events["done"].id, {one.id: "succeeded"}, now=10)
        _finish(storage, events["failed"].id, {one.id: "failed"}, now=20)
        _finish(storage, events["mixed"].id, {one.id: "succeeded", two.id: "retry"}, now=30)
        _finish(storage, events["recent"].id, {one.id: "succeeded"}, now=200)
        by_event = {d.event_id: d for d in storage.list_deliveries()}
        old = [
            by_event[events["done"].id],
            by_event[events["failed"].id],
            storage.list_deliveries(event_id=events["mixed"].id, endpoint_id=one.id)[0],
        ]
        kept = [d for d in storage.list_deliveries() if d not in old]
        kept_attempts = {d.id: storage.list_attempts(d.id) for d in kept}
        equal(len(kept), 3, "deliveries expected to stay (the retry, the recent, the waiting)")

        counts = _prune_all(storage, older_than=at(100))

        equal(sum(counts), 6, f"deliveries and events prune() deleted, in all ({counts})")
        for delivery in old:
            with raises(UnknownDeliveryError, f"get_delivery() of a pruned {delivery.status}"):
                storage.get_delivery(delivery.id)
            with raises(UnknownDeliveryError, "list_attempts() of a pruned delivery"):
                storage.list_attempts(delivery.id)
        for name in ("done", "failed", "lonely"):
            with raises(UnknownEventError, f"get_event() of the pruned event {name!r}"):
                storage.get_event(events[name].id)
        for name in ("mixed", "recent", "waiting", "new_lonely"):
            equal(storage.get_event(events[name].id), events[name], f"the kept event {name!r}")
        equal(
            sorted(_ids(storage.list_deliveries())),
            sorted(_ids(kept)),
            "list_deliveries() after prune()",
        )
        for delivery in kept:
            equal(storage.get_delivery(delivery.id), delivery, "a kept delivery, unchanged")
            equal(
                storage.list_attempts(delivery.id),
                kept_attempts[delivery.id],
                "the attempts of a kept delivery",
            )
        equal(
            storage.list_deliveries(event_id=events["mixed"].id),
            [d for d in kept if d.event_id == events["mixed"].id],
            "list_deliveries(event_id=...) of an event with a pruned delivery",
        )
        # The pending work still flows: both pending deliveries are claimed when due.
        equal(storage.next_due_at(), BASE, "next_due_at() after prune()")
        far = at(10**6)
        claims = storage.claim(now=far, lease_until=far + LEASE, limit=10)
        equal(
            sorted(c.delivery.id for c in claims),
            sorted(d.id for d in kept if d.status is DeliveryStatus.PENDING),
            "claim() after prune() takes the pending deliveries",
        )
        for claim in claims:
            check(storage.complete(claim, *outcome(claim, "succeeded", now=far)), "complete()")
        equal(_prune_all(storage, older_than=at(100)), [0], "prune() again, with nothing old")

    def test_prune_deletes_at_most_limit_deliveries_a_call(self) -> None:
        storage = self.storage
        deliveries = store_events(storage, 5)
        for n, _ in enumerate(deliveries):
            [claim] = storage.claim(now=at(n), lease_until=at(n) + LEASE, limit=1)
            storage.complete(claim, *outcome(claim, "succeeded", now=at(n)))
        first = _prune(storage, older_than=at(100), limit=2)
        left = storage.list_deliveries()
        equal(len(left), 3, "deliveries left after prune(limit=2) of 5 old finished ones")
        equal(
            _ids(left),
            [d.id for d in deliveries[2:]],
            "prune() takes the deliveries that changed longest ago first",
        )
        check(2 <= first <= 4, f"prune(limit=2) returned {first}; 2 deliveries, 0-2 events")
        counts = [first, *_prune_all(storage, older_than=at(100), limit=2)]
        equal(sum(counts), 10, f"5 deliveries and 5 events deleted in all ({counts})")
        check(all(0 < count <= 4 for count in counts[:-1]), f"counts per call: {counts}")
        equal(storage.list_deliveries(), [], "deliveries left in the end")
        for delivery in deliveries:
            with raises(UnknownEventError, "get_event() of a pruned event"):
                storage.get_event(delivery.event_id)
        for limit in (0, -1):
            with raises(InvalidInputError, f"prune(limit={limit})"):
                storage.prune(older_than=at(100), limit=limit)

    def test_prune_never_deletes_pending_work_however_old(self) -> None:
        storage = self.storage
        endpoint, parked = make_endpoint(), make_endpoint()
        storage.add_endpoint(endpoint)
        storage.add_endpoint(parked)
        new, retrying, leased, done = store_events(storage, 4, endpoint=endpoint)
        [waiting] = store_events(storage, 1, endpoint=parked)
        storage.update_endpoint(evolve(parked, enabled=False))
        # One event with a finished delivery and a pending one: the event stays.
        event = make_event()
        sibling = make_delivery(event, endpoint, due=at(1))
        storage.add_event(event, [make_delivery(event, endpoint), sibling])
        _finish(storage, event.id, {endpoint.id: "succeeded"}, now=0.5)
        finished: tuple[tuple[Delivery, Result], ...] = ((retrying, "retry"), (done, "failed"))
        for delivery, result in finished:
            _finish(storage, delivery.event_id, {endpoint.id: result}, now=0)
        [lease] = storage.claim(now=at(2), lease_until=at(10**7), limit=1, event_id=leased.event_id)
        pending = [new, retrying, leased, waiting, sibling]
        before = {d.id: (storage.get_delivery(d.id), storage.list_attempts(d.id)) for d in pending}

        counts = _prune_all(storage, older_than=at(10**8), limit=1)

        equal(sum(counts), 3, f"the two finished deliveries and one event deleted ({counts})")
        for delivery in pending:
            stored, attempts = before[delivery.id]
            equal(storage.get_delivery(delivery.id), stored, "a pending delivery after prune()")
            equal(storage.list_attempts(delivery.id), attempts, "its attempts after prune()")
            storage.get_event(delivery.event_id)  # still there
        with raises(UnknownEventError, "the event whose only delivery was pruned"):
            storage.get_event(done.event_id)
        # The work goes on where it stood: the lease holds, the parked delivery waits
        # for its endpoint, the others are claimed when due.
        attempt, state = outcome(lease, "succeeded", now=at(3))
        equal(storage.complete(lease, attempt, state), True, "complete() of a lease held")
        moved = storage.defer_endpoint(endpoint.id, until=at(5))
        check(moved in (0, 2), f"defer_endpoint() after prune() moved {moved}, not 2 (or 0)")
        storage.update_endpoint(evolve(parked, enabled=True))
        far = at(10**6)
        claims = storage.claim(now=far, lease_until=far + LEASE, limit=10)
        equal(
            sorted(c.delivery.id for c in claims),
            sorted(d.id for d in (new, retrying, waiting, sibling)),
            "claim() after prune()",
        )

    # A second instance on the same store --------------------------------------------

    def test_a_second_instance_shares_the_store(self) -> None:
        storage = self.storage
        again = self.open_again(storage)
        if again is None:
            skip("storage_factory_spec() returns None: no second instance to open")
        deliveries = store_events(storage, 4)
        endpoint: Endpoint = storage.get_endpoint(deliveries[0].endpoint_id)
        equal(again.list_endpoints(), [endpoint], "list_endpoints() from a second instance")
        equal(again.list_deliveries(), deliveries, "list_deliveries() from a second instance")
        mine = storage.claim(now=BASE, lease_until=at(60), limit=2)
        theirs = again.claim(now=BASE, lease_until=at(60), limit=5)
        equal(
            sorted(c.delivery.id for c in mine + theirs),
            sorted(d.id for d in deliveries),
            "two instances split the deliveries between them",
        )
        claim = theirs[0]
        attempt, state = outcome(claim, "succeeded", now=at(1))
        equal(again.complete(claim, attempt, state), True, "complete() on the second instance")
        equal(storage.get_delivery(claim.delivery.id), state, "state seen by the first instance")
