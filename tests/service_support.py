"""Helpers for tests that start long-running `mentorpulse run` processes."""

from __future__ import annotations

from pathlib import Path

import yaml


def serve_on_any_port(config: Path) -> None:
    """Make ``config``'s HTTP service take any free port (``service.http.port: 0``), so
    that several daemons or workers of one test, or of two test runs on one machine, do
    not contend for the default 9464. A port set by the test itself is kept."""
    settings = yaml.safe_load(config.read_text()) or {}
    http = settings.setdefault("service", {}).setdefault("http", {})
    if "port" not in http:
        http["port"] = 0
        config.write_text(yaml.safe_dump(settings, sort_keys=False))
