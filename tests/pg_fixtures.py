"""PostgreSQL fixtures: a throwaway database on the local server, dropped afterwards.

Import the fixture names into a test module to use them. The server is
``HOOKDISPATCH_TEST_POSTGRES`` (a libpq connection string) or, by default, the one
our machines run: 127.0.0.1:5432, user postgres, trust auth, database ``test``.
When no server answers the tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import NoReturn

import pytest

DEFAULT_SERVER = "host=127.0.0.1 port=5432 user=postgres connect_timeout=5"
ADMIN_DATABASES = ("test", "postgres")


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true needs a PostgreSQL server, but {reason}", pytrace=False)
    pytest.skip(
        f"no PostgreSQL for these tests: {reason}. Start one on 127.0.0.1:5432"
        " (trust auth, database 'test'; .ci/run does) or set HOOKDISPATCH_TEST_POSTGRES"
    )


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> str:
    """A connection string to an existing database on the server, for CREATE DATABASE."""
    try:
        import psycopg  # noqa: PLC0415 - a skip, not an error, without it
        from psycopg.conninfo import make_conninfo  # noqa: PLC0415
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[test]')")
    configured = os.environ.get("HOOKDISPATCH_TEST_POSTGRES")
    candidates = (
        [configured]
        if configured
        else [make_conninfo(DEFAULT_SERVER, dbname=name) for name in ADMIN_DATABASES]
    )
    errors = []
    for dsn in candidates:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            errors.append(str(exc).strip().splitlines()[0])
            continue
        return dsn
    _unavailable("; ".join(errors))


@pytest.fixture(scope="session")
def postgres_dsn(postgres_admin_dsn: str) -> Iterator[str]:
    """A new database ``hd_test_<random>`` for this test session, dropped at its end.

    Commits do not wait for the disk (``synchronous_commit = off``): the data is
    thrown away, and the tests measure our locking, not the machine's fsync.
    """
    import psycopg  # noqa: PLC0415 - see postgres_admin_dsn
    from psycopg import sql  # noqa: PLC0415
    from psycopg.conninfo import make_conninfo  # noqa: PLC0415

    name = f"hd_test_{secrets.token_hex(6)}"
    database = sql.Identifier(name)
    with psycopg.connect(postgres_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(database))
        conn.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(database))
    try:
        yield make_conninfo(postgres_admin_dsn, dbname=name)
    finally:
        with psycopg.connect(postgres_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database))


def new_schema() -> str:
    """A schema name no other test uses: every PostgresStorage gets a store of its own."""
    return f"t_{secrets.token_hex(8)}"
