"""The test PostgreSQL: a fresh schema of it per test, as a state URL, or a skip (a failure in CI) without it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

PG_URL = os.environ.get("SYNCD_TEST_POSTGRES_URL", "")
NOT_SET = "set SYNCD_TEST_POSTGRES_URL=postgresql+psycopg://… to run these tests on PostgreSQL too"


def _admin_url() -> sa.URL:
    url = make_url(PG_URL)
    return url.set(drivername="postgresql+psycopg") if url.drivername == "postgresql" else url


@contextmanager
def pg_schema(prefix: str, *, skip_reason: str = NOT_SET) -> Iterator[str]:
    """A state URL on a fresh schema of the test PostgreSQL, dropped afterwards. Without SYNCD_TEST_POSTGRES_URL
    the test is skipped with `skip_reason`, or fails where CI requires PostgreSQL (SYNCD_REQUIRE_POSTGRES: a
    skipped PostgreSQL test would hide a gap)."""
    if not PG_URL:
        if os.environ.get("SYNCD_REQUIRE_POSTGRES"):
            pytest.fail("SYNCD_REQUIRE_POSTGRES is set but SYNCD_TEST_POSTGRES_URL is not")
        pytest.skip(skip_reason)
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(_admin_url())
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield _admin_url().update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
