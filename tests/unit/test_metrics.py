"""The database-wide figures: left out (and said once) when the database cannot be read;
live workers from Procrastinate's heartbeats."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from structlog.testing import capture_logs

from mentorpulse import stages
from mentorpulse.sample import write_demo
from mentorpulse.service.metrics import DatabaseFigures


def _families(registry: CollectorRegistry) -> dict[str, float | None]:
    """Each family's name, with its value when it has one unlabelled sample."""
    return {
        family.name: family.samples[0].value if len(family.samples) == 1 else None
        for family in registry.collect()
    }


def test_an_unreadable_database_leaves_its_figures_out_and_is_logged_once(
    tmp_path: Path,
) -> None:
    write_demo(tmp_path, today=date(2026, 11, 23))
    ctx = stages.Context.open(tmp_path / "mentorpulse.yaml")
    stages.sync_sources(ctx)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseFigures(ctx))
    readable = _families(registry)
    assert readable["mentorpulse_database_read_success"] == 1
    assert readable["mentorpulse_workers_alive"] == 1
    assert "mentorpulse_source_state" in readable

    database = tmp_path / "mentorpulse.db"
    ctx.engine.dispose()
    database.rename(tmp_path / "away.db")  # SQLite opens an empty file in its place
    with capture_logs() as logs:
        assert _families(registry) == {"mentorpulse_database_read_success": 0}
        assert _families(registry) == {"mentorpulse_database_read_success": 0}
    assert [entry["event"] for entry in logs] == ["metrics_database_unreadable"]

    ctx.engine.dispose()
    (tmp_path / "away.db").replace(database)
    with capture_logs() as logs:
        assert _families(registry).keys() == readable.keys()
    assert [entry["event"] for entry in logs] == ["metrics_database_readable"]


@pytest.mark.postgres
def test_workers_alive_counts_procrastinate_heartbeats_newer_than_the_stalled_timeout(
    pg_url: str, tmp_path: Path
) -> None:
    write_demo(tmp_path, today=date(2026, 11, 23))
    config = tmp_path / "mentorpulse.yaml"
    config.write_text(
        config.read_text().replace("database: sqlite:///mentorpulse.db", f"database: {pg_url}")
    )
    ctx = stages.Context.open(config)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseFigures(ctx))
    # The migrations made Procrastinate's tables: a pool, none of whose workers runs yet.
    assert _families(registry)["mentorpulse_workers_alive"] == 0
    with ctx.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (NOW()), "
                "(NOW() - interval '30 seconds'), (NOW() - interval '10 minutes')"
            )
        )
    assert _families(registry)["mentorpulse_workers_alive"] == 2
    ctx.engine.dispose()
