"""SQLite and PostgreSQL build a claim's Endpoint once per distinct row and keep it.

What a kept Endpoint must never do: let one claim's consumer change what another
claim sees (a list or object in its metadata is not frozen), keep an old secret
after the storage's own update, or read a stored row differently from any other
read of endpoints (a JSON null in headers or metadata is the empty object).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from attrs import evolve

import hookdispatch as hd
from hookdispatch.testing._samples import BASE, make_delivery, make_endpoint, make_event
from pg_fixtures import new_schema, postgres_admin_dsn, postgres_dsn  # noqa: F401 - fixtures

NOW = BASE  # the samples' deliveries are due then
LATER = NOW + timedelta(seconds=60)


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[hd.Storage]:
    if request.param == "sqlite":
        store: hd.Storage = hd.SQLiteStorage(tmp_path / "hooks.db")
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        store = hd.PostgresStorage(dsn, schema=new_schema())
    yield store
    store.close()


def deliveries_to(storage: hd.Storage, endpoint: hd.Endpoint, count: int) -> None:
    for n in range(count):
        event = make_event(n=n)
        storage.add_event(event, [make_delivery(event, endpoint)])


def claim_one(storage: hd.Storage) -> hd.Claim:
    [claim] = storage.claim(now=NOW, lease_until=LATER, limit=1)
    return claim


def test_a_consumer_changing_a_claims_metadata_changes_no_other_claim(
    storage: hd.Storage,
) -> None:
    endpoint = evolve(make_endpoint(), metadata={"tags": ["a"], "plan": {"tier": "pro"}})
    storage.add_endpoint(endpoint)
    deliveries_to(storage, endpoint, 2)
    first = claim_one(storage)
    first.endpoint.metadata["tags"].append("INJECTED")
    first.endpoint.metadata["plan"]["tier"] = "INJECTED"
    second = claim_one(storage)
    assert second.endpoint.metadata == {"tags": ["a"], "plan": {"tier": "pro"}}


def test_flat_metadata_is_shared_and_an_update_forgets_the_old_secret(
    storage: hd.Storage,
) -> None:
    endpoint = evolve(make_endpoint(), metadata={"customer": "acct_42", "seats": 3})
    storage.add_endpoint(endpoint)
    deliveries_to(storage, endpoint, 3)
    first, second = claim_one(storage), claim_one(storage)
    assert first.endpoint is second.endpoint  # built once
    rotated = evolve(
        endpoint,
        secret=make_endpoint().secret,
        previous_secret=endpoint.secret,
        previous_secret_expires_at=LATER,
    )
    storage.update_endpoint(rotated)
    assert repr(storage._endpoints) == "<EndpointCache of 0>"  # type: ignore[attr-defined]
    assert claim_one(storage).endpoint == rotated


@pytest.fixture
def postgres(postgres_dsn: str) -> Iterator[hd.PostgresStorage]:  # noqa: F811
    store = hd.PostgresStorage(postgres_dsn, schema=new_schema())
    yield store
    store.close()


@pytest.mark.parametrize("column", ["headers", "metadata"])
def test_a_json_null_in_postgresql_headers_or_metadata_is_the_empty_object(
    postgres: hd.PostgresStorage,
    column: str,
    postgres_dsn: str,  # noqa: F811
) -> None:
    """As every other read of endpoints reads it (psycopg's None): written by hand
    or by an older tool, it must not fail the claims of every endpoint. (SQLite
    stores them as text, which no JSON null reaches.)"""
    plain, other = make_endpoint(), make_endpoint()
    for endpoint in (plain, other):
        postgres.add_endpoint(endpoint)
        deliveries_to(postgres, endpoint, 1)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            f"UPDATE {postgres.schema}.endpoints SET {column} = 'null'::jsonb WHERE id = %s",
            (plain.id,),
        )
    assert getattr(postgres.get_endpoint(plain.id), column) == {}
    claims = postgres.claim(now=NOW, lease_until=LATER, limit=2)
    assert sorted(claim.endpoint.id for claim in claims) == sorted([plain.id, other.id])
    [read] = [claim.endpoint for claim in claims if claim.endpoint.id == plain.id]
    assert read == postgres.get_endpoint(plain.id)
