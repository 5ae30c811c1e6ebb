"""Alembic environment of syncd's state DB.

syncd runs its migrations itself (`syncd.state.migrate.upgrade`, called by `Store.open`): it hands over an
open connection, already inside the transaction (and lock) the upgrade runs in, through
`config.attributes["connection"]`. There is no alembic.ini; for hand use (autogenerating a revision, or
`--sql` output) a `sqlalchemy.url` main option is honoured instead.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from syncd.state.migrate import ours
from syncd.state.tables import metadata


def _run_on(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite can barely ALTER: later migrations recreate tables ("batch mode") there.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=ours,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    config = context.config
    url = config.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        if not url:
            raise RuntimeError("offline (--sql) migrations need the sqlalchemy.url option")
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    if not url:
        raise RuntimeError(
            "nothing to migrate: pass a connection (syncd.state.migrate.alembic_config) or set sqlalchemy.url"
        )
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            _run_on(conn)
    finally:
        engine.dispose()


_main()
