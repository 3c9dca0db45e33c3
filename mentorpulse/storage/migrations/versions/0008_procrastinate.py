"""worker pool: Procrastinate's queue schema (PostgreSQL only)

The pool (``mentorpulse run`` on PostgreSQL) shares its work through Procrastinate, whose
tables, functions and triggers are created here from the schema.sql of the installed
Procrastinate, so `mentorpulse db upgrade` is the one step that readies a database (and
``procrastinate --app=mentorpulse.service.pool.app`` works against it). A database where
an operator applied Procrastinate's schema by hand keeps it. SQLite has no pool: nothing.

Revision ID: procrastinate
Revises: sync_shards
"""

from __future__ import annotations

from alembic import op

revision = "procrastinate"
down_revision = "sync_shards"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    exists = bind.exec_driver_sql("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").scalar()
    if exists:
        return
    from procrastinate.schema import SchemaManager

    # Many statements in one: psycopg sends a query without parameters as one simple
    # query, inside Alembic's transaction (the same connection).
    raw = bind.connection.driver_connection
    assert raw is not None
    raw.execute(SchemaManager.get_schema())


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    raw = bind.connection.driver_connection
    assert raw is not None
    raw.execute(  # no parameters: the % of format() are the server's, not psycopg's
        """
        DO $$
        DECLARE item record;
        BEGIN
          FOR item IN SELECT tablename FROM pg_tables
                      WHERE schemaname = current_schema() AND tablename LIKE 'procrastinate\\_%'
          LOOP EXECUTE format('DROP TABLE IF EXISTS %I CASCADE', item.tablename); END LOOP;
          FOR item IN SELECT p.oid::regprocedure AS signature FROM pg_proc p
                      JOIN pg_namespace n ON n.oid = p.pronamespace
                      WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate\\_%'
          LOOP EXECUTE format('DROP FUNCTION IF EXISTS %s CASCADE', item.signature); END LOOP;
          FOR item IN SELECT t.typname FROM pg_type t
                      JOIN pg_namespace n ON n.oid = t.typnamespace
                      WHERE n.nspname = current_schema() AND t.typname LIKE 'procrastinate\\_%'
                        AND t.typtype IN ('e', 'c')
          LOOP EXECUTE format('DROP TYPE IF EXISTS %I CASCADE', item.typname); END LOOP;
        END $$
        """
    )
