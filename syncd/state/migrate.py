"""Runs the state DB's Alembic migrations from code, so syncd needs no alembic.ini and upgrades on start.

`upgrade` works on a connection the caller has opened inside a transaction: on PostgreSQL it first takes an
advisory lock, so replicas starting together upgrade one after the other (the later ones find nothing to do);
on SQLite the caller's `BEGIN IMMEDIATE` does the same.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from syncd.errors import StateError

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revision", "head_revision", "ours", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# pg_advisory_xact_lock key: "syncd" in ASCII. Held until the upgrade transaction ends.
_PG_MIGRATION_LOCK = 0x73796E6364


def ours(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's `include_name` hook: the schema objects syncd's metadata describes. Procrastinate's tables (the
    replicas' queue, installed by revision 0003 on PostgreSQL) are its own, not compared with syncd's tables."""
    return not (name or "").startswith("procrastinate_")


def alembic_config(connection: sa.Connection | None = None, *, url: str | None = None) -> Config:
    """An Alembic config for syncd's migrations, for `alembic.command.*` (upgrade, revision --autogenerate…).

    Pass an open `connection` (its transaction is used as is) or a `url` for env.py to connect to.
    """
    config = Config()
    # ConfigParser interpolates "%": a path or URL containing one must be escaped.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The schema revision this version of syncd expects."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations shipped"
    return head


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database is at; None for an empty database."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: sa.Connection) -> None:
    """Bring the schema to head, inside the caller's transaction. A no-op when it is there already.

    Raises StateError when the database was migrated by a newer syncd (a revision this one does not know):
    running an old binary against a newer schema would misread it.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
    config = alembic_config(connection)
    script = ScriptDirectory.from_config(config)
    known = {s.revision for s in script.walk_revisions()}
    current = MigrationContext.configure(connection).get_current_heads()
    unknown = [rev for rev in current if rev not in known]
    if unknown:
        raise StateError(
            f"the state DB schema is at revision {', '.join(unknown)}, which this syncd does not know "
            f"(it goes up to {script.get_current_head()}): it was upgraded by a newer syncd; run that version"
        )
    if set(current) != set(script.get_heads()):
        command.upgrade(config, "head")
