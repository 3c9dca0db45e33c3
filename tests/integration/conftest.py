"""Fixtures of the integration tests: a real SMTP server (test_caldav's own ``server``
fixture, a CalDAV server, shadows this one in that module)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.smtpd import SmtpServer, smtp_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SmtpServer]:
    """aiosmtpd with STARTTLS and AUTH on loopback, for one test."""
    with smtp_server(tmp_path) as running:
        yield running
