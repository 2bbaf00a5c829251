"""Our own backends run the shipped conformance suite, exactly as a user's would."""

from __future__ import annotations

import uuid

import pytest

import hookdispatch as hd
from hookdispatch.testing import FactorySpec, StorageConformance
from pg_fixtures import new_schema, postgres_admin_dsn, postgres_dsn  # noqa: F401 - fixtures


class TestMemoryStorage(StorageConformance):
    def make_storage(self) -> hd.Storage:
        return hd.MemoryStorage()


class TestSQLiteStorage(StorageConformance):
    supports_multiple_processes = True

    def make_storage(self) -> hd.Storage:
        return hd.SQLiteStorage(self.tmp_path / f"{uuid.uuid4().hex}.db")

    def storage_factory_spec(self, storage: hd.Storage) -> FactorySpec:
        assert isinstance(storage, hd.SQLiteStorage)
        return FactorySpec("hookdispatch:SQLiteStorage", (str(storage.path),))


class TestPostgresStorage(StorageConformance):
    supports_multiple_processes = True

    @pytest.fixture(autouse=True)
    def _database(self, postgres_dsn: str) -> None:  # noqa: F811 - the fixture
        self.dsn = postgres_dsn

    def make_storage(self) -> hd.Storage:
        return hd.PostgresStorage(self.dsn, schema=new_schema(), max_connections=4)

    def storage_factory_spec(self, storage: hd.Storage) -> FactorySpec:
        assert isinstance(storage, hd.PostgresStorage)
        return FactorySpec("hookdispatch:PostgresStorage", (self.dsn,), {"schema": storage.schema})
