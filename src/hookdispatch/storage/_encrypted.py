"""EncryptedStorage: endpoint secrets encrypted at rest, with keys the host supplies.

A wrapper around any :class:`Storage`: it encrypts ``Endpoint.secret`` and
``Endpoint.previous_secret`` on their way into the wrapped storage and decrypts them
on every way out, so the database (and its backups and dumps) never holds a signing
secret in plain text. Everything else is forwarded untouched.

The cryptography is Fernet, from the ``cryptography`` package (the ``encryption``
extra): AES-128-CBC with a random IV, authenticated by HMAC-SHA256, keys of 32 random
bytes in url-safe base64. Several keys are accepted at once (``MultiFernet``): the
first encrypts, every one decrypts, which is how keys are rotated without downtime.

A stored secret is :data:`~hookdispatch._models.ENCRYPTED_SECRET_PREFIX` followed by
the Fernet token. A stored secret without that prefix is a secret written before
encryption was turned on: it is returned as it is, and :meth:`EncryptedStorage.reencrypt`
encrypts it. No user-given secret can start with the prefix (``Endpoint.create``
refuses it), so the two never mix.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import TypeVar

from attrs import evolve
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .._core import Claim
from .._listing import DeliveryQuery, EndpointQuery
from .._models import ENCRYPTED_SECRET_PREFIX, Attempt, Delivery, DeliveryStatus, Endpoint, Event
from ..exceptions import InvalidInputError, StorageError, UnknownEndpointError
from ._base import Storage

__all__ = ["EncryptedStorage"]

_T = TypeVar("_T")

_KEY_HELP = (
    "a Fernet key is 32 random bytes in url-safe base64 (44 characters); make one with"
    " EncryptedStorage.generate_key()"
)


def _fernets(keys: object) -> list[Fernet]:
    """One Fernet per key, in order; InvalidInputError (never quoting a key) otherwise."""
    if isinstance(keys, str | bytes) or not isinstance(keys, Sequence):
        got = "one key" if isinstance(keys, str | bytes) else f"a {type(keys).__name__}"
        raise InvalidInputError(
            "keys must be a list of Fernet keys, the one that encrypts first, such as"
            f" keys=[key] or keys=[new_key, old_key] (got {got})"
        )
    if not keys:
        raise InvalidInputError(f"keys must name at least one key; {_KEY_HELP}")
    fernets = []
    for number, key in enumerate(keys, start=1):
        if not isinstance(key, str | bytes):
            raise InvalidInputError(
                f"key {number} of {len(keys)} must be a str or bytes, not"
                f" {type(key).__name__}; {_KEY_HELP}"
            )
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError, binascii.Error):
            raise InvalidInputError(
                f"key {number} of {len(keys)} is not a Fernet key; {_KEY_HELP}"
            ) from None  # the cause would quote the key
    return fernets


class EncryptedStorage(Storage):
    """A :class:`Storage` that keeps endpoint secrets encrypted in ``inner``.

    ``keys`` are Fernet keys (:meth:`generate_key`), as ``str`` or ``bytes``: the first
    encrypts every secret written; each of them decrypts. Keep them outside the
    database (a secret manager, the environment): whoever has the database but not
    the keys cannot sign as you.

    What it does, for every backend:

    * ``add_endpoint`` and ``update_endpoint`` store ``secret`` and ``previous_secret``
      encrypted with the first key.
    * Every method that returns endpoints (``get_endpoint``, ``list_endpoints``,
      ``endpoints_for``, and the ``Claim.endpoint`` of ``claim`` and
      ``complete_and_claim``) returns them decrypted, so a Dispatcher signs with the
      plain secret and callers see what they stored.
    * A secret stored in plain text (written before encryption was turned on) is
      returned as it is; :meth:`reencrypt` encrypts it.
    * A secret that no key decrypts raises :class:`StorageError` naming the endpoint.
    * Every other method is forwarded to ``inner`` as it is, so its own
      implementations (batched writes, the outbox, pruning, one-transaction
      ``complete_and_claim``) are used, and ``blocking`` and ``without_waiting``
      are ``inner``'s.

    Secrets, tokens and keys never appear in a message, a log line or a ``repr()``.
    Closing it closes ``inner``.

    Raises InvalidInputError for an ``inner`` that is not a Storage (or is already an
    EncryptedStorage) and for ``keys`` that are not a non-empty list of Fernet keys.
    """

    def __init__(self, inner: Storage, *, keys: Sequence[str | bytes]) -> None:
        if not isinstance(inner, Storage):
            raise InvalidInputError(
                f"inner must be a hookdispatch Storage, such as SQLiteStorage('webhooks.db')"
                f" (got {type(inner).__name__})"
            )
        if isinstance(inner, EncryptedStorage):
            raise InvalidInputError(
                "inner is already an EncryptedStorage; give one EncryptedStorage every key"
                " instead: keys=[new_key, old_key]"
            )
        fernets = _fernets(keys)
        self._inner = inner
        self._first = fernets[0]
        self._keys = MultiFernet(fernets)
        self._key_count = len(fernets)
        # Storage.blocking is a class attribute; this instance is as blocking as inner
        # (encrypting and decrypting take microseconds and no lock).
        self.__dict__["blocking"] = inner.blocking

    @staticmethod
    def generate_key() -> str:
        """A new random Fernet key (32 bytes, url-safe base64): keep it outside the database."""
        return Fernet.generate_key().decode("ascii")

    @property
    def inner(self) -> Storage:
        """The wrapped storage, which holds the encrypted secrets."""
        return self._inner

    def __repr__(self) -> str:
        keys = "1 key" if self._key_count == 1 else f"{self._key_count} keys"
        return f"EncryptedStorage({self._inner!r}, {keys})"

    # Secrets ------------------------------------------------------------------------

    def _encrypt(self, secret: str) -> str:
        return ENCRYPTED_SECRET_PREFIX + self._keys.encrypt(secret.encode()).decode("ascii")

    def _decrypt(self, stored: str, endpoint_id: str) -> str:
        """The plain secret of a stored one (returned as is when not encrypted)."""
        if not stored.startswith(ENCRYPTED_SECRET_PREFIX):
            return stored
        try:
            return self._keys.decrypt(stored[len(ENCRYPTED_SECRET_PREFIX) :]).decode()
        except (InvalidToken, UnicodeDecodeError):
            raise self._undecryptable(endpoint_id) from None  # never chain the token

    def _undecryptable(self, endpoint_id: str) -> StorageError:
        keys = "1 key" if self._key_count == 1 else f"{self._key_count} keys"
        return StorageError(
            f"no configured key ({keys} given) decrypts the secret of endpoint"
            f" {endpoint_id!r}: it was encrypted with another key, or altered. Open the"
            " storage with the key it was written with among keys= (during a key rotation:"
            " the new key first, the old one after it, until reencrypt() has run)"
        )

    def _seal(self, secret: str, endpoint_id: str) -> str:
        """``secret`` as it is stored: encrypted with the first key.

        A secret that is already encrypted (an endpoint read from ``inner`` directly)
        is kept as it is once a key is found to decrypt it, never encrypted twice.
        """
        if secret.startswith(ENCRYPTED_SECRET_PREFIX):
            self._decrypt(secret, endpoint_id)  # raises if no key decrypts it
            return secret
        return self._encrypt(secret)

    def _sealed(self, endpoint: Endpoint) -> Endpoint:
        previous = endpoint.previous_secret
        return evolve(
            endpoint,
            secret=self._seal(endpoint.secret, endpoint.id),
            previous_secret=None if previous is None else self._seal(previous, endpoint.id),
        )

    def _opened(self, endpoint: Endpoint) -> Endpoint:
        secret, previous = endpoint.secret, endpoint.previous_secret
        if not secret.startswith(ENCRYPTED_SECRET_PREFIX) and (
            previous is None or not previous.startswith(ENCRYPTED_SECRET_PREFIX)
        ):
            return endpoint  # stored before encryption was turned on
        return evolve(
            endpoint,
            secret=self._decrypt(secret, endpoint.id),
            previous_secret=None if previous is None else self._decrypt(previous, endpoint.id),
        )

    def _opened_claims(self, claims: list[Claim]) -> list[Claim]:
        return [evolve(claim, endpoint=self._opened(claim.endpoint)) for claim in claims]

    def _with_first_key(self, stored: str, endpoint_id: str) -> str:
        """``stored`` encrypted with the first key: as it is if it already is."""
        if not stored.startswith(ENCRYPTED_SECRET_PREFIX):
            return self._encrypt(stored)
        token = stored[len(ENCRYPTED_SECRET_PREFIX) :]
        try:
            self._first.decrypt(token)
        except InvalidToken:
            pass
        else:
            return stored
        try:
            return ENCRYPTED_SECRET_PREFIX + self._keys.rotate(token).decode("ascii")
        except InvalidToken:
            raise self._undecryptable(endpoint_id) from None

    def reencrypt(self) -> int:
        """Encrypt every endpoint's secrets with the first key; return how many endpoints
        changed.

        Secrets stored in plain text (written before encryption was turned on) are
        encrypted; secrets encrypted with another of the keys are re-encrypted
        (``MultiFernet.rotate``); those already encrypted with the first key are left
        alone, so a second run returns 0. Endpoints are read and written back one at a
        time (``inner.update_endpoint``), each right after it is read, so deliveries
        go on meanwhile; run it while no one rotates secrets or edits endpoints, since
        a change made to an endpoint between its read and its write is overwritten.

        The key rotation it completes: put the new key first in ``keys``, keep the old
        ones after it, in every process; run this; then drop the old keys. Raises
        StorageError, naming the endpoint, for a secret that no key decrypts (nothing
        is written for that endpoint; those before it stay re-encrypted).
        """
        changed = 0
        for listed in self._inner.list_endpoints():
            try:
                endpoint = self._inner.get_endpoint(listed.id)  # fresh: keep the window short
            except UnknownEndpointError:
                continue  # deleted meanwhile
            secret = self._with_first_key(endpoint.secret, endpoint.id)
            previous = endpoint.previous_secret
            if previous is not None:
                previous = self._with_first_key(previous, endpoint.id)
            if secret == endpoint.secret and previous == endpoint.previous_secret:
                continue
            try:
                self._inner.update_endpoint(
                    evolve(endpoint, secret=secret, previous_secret=previous)
                )
            except UnknownEndpointError:
                continue
            changed += 1
        return changed

    # Endpoints ----------------------------------------------------------------------

    def add_endpoint(self, endpoint: Endpoint) -> None:
        """Store a new endpoint, its secrets encrypted with the first key."""
        self._inner.add_endpoint(self._sealed(endpoint))

    def update_endpoint(self, endpoint: Endpoint) -> None:
        """Replace the stored endpoint, its secrets encrypted with the first key."""
        self._inner.update_endpoint(self._sealed(endpoint))

    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        """The endpoint with this id, its secrets decrypted."""
        return self._opened(self._inner.get_endpoint(endpoint_id))

    def list_endpoints(self) -> list[Endpoint]:
        """Every endpoint, its secrets decrypted."""
        return [self._opened(endpoint) for endpoint in self._inner.list_endpoints()]

    def find_endpoints(self, query: EndpointQuery) -> list[Endpoint]:
        """``inner``'s page of endpoints, the secrets decrypted."""
        return [self._opened(endpoint) for endpoint in self._inner.find_endpoints(query)]

    def delete_endpoint(self, endpoint_id: str, *, now: datetime) -> int:
        """Forwarded to ``inner``."""
        return self._inner.delete_endpoint(endpoint_id, now=now)

    def endpoints_for(self, tenant: str, event_type: str) -> list[Endpoint]:
        """``inner``'s fan-out, the secrets decrypted."""
        return [
            self._opened(endpoint) for endpoint in self._inner.endpoints_for(tenant, event_type)
        ]

    # Events and deliveries (forwarded) ----------------------------------------------

    def add_event(self, event: Event, deliveries: Sequence[Delivery]) -> bool:
        """Forwarded to ``inner``."""
        return self._inner.add_event(event, deliveries)

    def pending_by_endpoint(self, *, limit: int) -> list[tuple[str, int]]:
        """Forwarded to ``inner``."""
        return self._inner.pending_by_endpoint(limit=limit)

    def add_event_to_subscribers(self, event: Event, *, now: datetime) -> bool:
        """Forwarded to ``inner`` (its fan-out reads no secret)."""
        return self._inner.add_event_to_subscribers(event, now=now)

    def add_events(self, batch: Sequence[tuple[Event, Sequence[Delivery]]]) -> list[bool]:
        """Forwarded to ``inner``."""
        return self._inner.add_events(batch)

    def add_event_in_transaction(
        self, connection: object, event: Event, deliveries: Sequence[Delivery]
    ) -> bool:
        """Forwarded to ``inner``."""
        return self._inner.add_event_in_transaction(connection, event, deliveries)

    def add_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Forwarded to ``inner``."""
        self._inner.add_deliveries(deliveries)

    def get_event(self, event_id: str) -> Event:
        """Forwarded to ``inner``."""
        return self._inner.get_event(event_id)

    def get_delivery(self, delivery_id: str) -> Delivery:
        """Forwarded to ``inner``."""
        return self._inner.get_delivery(delivery_id)

    def find_deliveries(self, query: DeliveryQuery) -> list[Delivery]:
        """Forwarded to ``inner``."""
        return self._inner.find_deliveries(query)

    def list_deliveries(
        self,
        *,
        event_id: str | None = None,
        endpoint_id: str | None = None,
        status: DeliveryStatus | None = None,
        limit: int | None = None,
    ) -> list[Delivery]:
        """Forwarded to ``inner``."""
        return self._inner.list_deliveries(
            event_id=event_id, endpoint_id=endpoint_id, status=status, limit=limit
        )

    # Work ---------------------------------------------------------------------------

    def claim(
        self,
        *,
        now: datetime,
        lease_until: datetime,
        limit: int,
        event_id: str | None = None,
        exclude_endpoints: Collection[str] = (),
    ) -> list[Claim]:
        """``inner``'s claims, each ``Claim.endpoint``'s secrets decrypted."""
        return self._opened_claims(
            self._inner.claim(
                now=now,
                lease_until=lease_until,
                limit=limit,
                event_id=event_id,
                exclude_endpoints=exclude_endpoints,
            )
        )

    def complete(self, claim: Claim, attempt: Attempt, delivery: Delivery) -> bool:
        """Forwarded to ``inner`` (which uses the claim's lease and ids, not its secrets)."""
        return self._inner.complete(claim, attempt, delivery)

    def complete_and_claim(
        self,
        claim: Claim,
        attempt: Attempt,
        delivery: Delivery,
        *,
        now: datetime,
        lease_until: datetime,
        exclude_endpoints: Collection[str] = (),
    ) -> tuple[bool, list[Claim]]:
        """``inner``'s ``complete_and_claim``, the next claim's endpoint decrypted."""
        held, claims = self._inner.complete_and_claim(
            claim,
            attempt,
            delivery,
            now=now,
            lease_until=lease_until,
            exclude_endpoints=exclude_endpoints,
        )
        return held, self._opened_claims(claims)

    def add_event_and_claim(
        self,
        event: Event,
        *,
        now: datetime,
        lease_until: datetime,
        limit: int,
        exclude_endpoints: Collection[str] = (),
    ) -> tuple[bool, list[Claim]]:
        """``inner``'s ``add_event_and_claim``, the claims' endpoints decrypted."""
        stored, claims = self._inner.add_event_and_claim(
            event,
            now=now,
            lease_until=lease_until,
            limit=limit,
            exclude_endpoints=exclude_endpoints,
        )
        return stored, self._opened_claims(claims)

    def complete_many(
        self,
        completions: Sequence[tuple[Claim, Attempt, Delivery]],
        *,
        now: datetime,
        lease_until: datetime,
        limit: int = 0,
        exclude_endpoints: Collection[str] = (),
    ) -> tuple[list[bool], list[Claim]]:
        """``inner``'s ``complete_many``, the claims' endpoints decrypted."""
        held, claims = self._inner.complete_many(
            completions,
            now=now,
            lease_until=lease_until,
            limit=limit,
            exclude_endpoints=exclude_endpoints,
        )
        return held, self._opened_claims(claims)

    def release(self, claims: Sequence[Claim], *, due: datetime) -> None:
        """Forwarded to ``inner`` (a lease is all it needs of a claim)."""
        self._inner.release(claims, due=due)

    def defer_endpoint(self, endpoint_id: str, *, until: datetime) -> int:
        """Forwarded to ``inner``."""
        return self._inner.defer_endpoint(endpoint_id, until=until)

    def next_due_at(self, *, event_id: str | None = None) -> datetime | None:
        """Forwarded to ``inner``."""
        return self._inner.next_due_at(event_id=event_id)

    def list_attempts(self, delivery_id: str) -> list[Attempt]:
        """Forwarded to ``inner``."""
        return self._inner.list_attempts(delivery_id)

    # Retention and lifecycle --------------------------------------------------------

    def prune(self, *, older_than: datetime, limit: int) -> int:
        """Forwarded to ``inner``."""
        return self._inner.prune(older_than=older_than, limit=limit)

    def without_waiting(self, call: Callable[[], _T]) -> _T:
        """``inner``'s: ``call`` goes through this storage to ``inner``, in this thread
        (encrypting and decrypting never wait)."""
        return self._inner.without_waiting(call)

    def close(self) -> None:
        """Close ``inner``."""
        self._inner.close()
