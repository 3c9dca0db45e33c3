"""Fixtures of the integration tests: a real SMTP server (test_caldav's own ``server``
fixture, a CalDAV server, shadows this one in that module)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.smtpd import SmtpServer, smtp_server
from tests.service_support import RunProcess, stopped_at_end


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SmtpServer]:
    """aiosmtpd with STARTTLS and AUTH on loopback, for one test."""
    with smtp_server(tmp_path) as running:
        yield running


@pytest.fixture
def daemons() -> Iterator[list[RunProcess]]:
    """Embedded daemons (`mentorpulse run` on SQLite), each stopped at the test's end."""
    yield from stopped_at_end()


@pytest.fixture
def workers() -> Iterator[list[RunProcess]]:
    """Pool workers (`mentorpulse run` on PostgreSQL), each stopped at the test's end."""
    yield from stopped_at_end()
