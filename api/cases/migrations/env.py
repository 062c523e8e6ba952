"""Alembic's environment: migrate the connection `api.cases.database.migrate` hands over, inside its transaction."""

from __future__ import annotations

from alembic import context

from api.cases.tables import metadata

# Any number for pg_advisory_xact_lock, constant across versions: processes starting at once migrate one at a time.
_MIGRATION_LOCK = 0x756E_6574_3364

connection = context.config.attributes["connection"]
if connection.dialect.name == "postgresql":
    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
