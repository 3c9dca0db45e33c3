"""Long-running `mentorpulse run` processes (embedded daemons, pool workers) in tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

STOP_WAIT = 60.0  # seconds a process may take to stop on a loaded 2-core machine
STARTED = ('"daemon_started"', '"worker_started"')


def add_settings(config: Path, extra: dict[str, Any]) -> None:
    """Merge ``extra`` into ``config``'s settings (nested mappings key by key), so that a
    test adds ``service.http.port`` to a config whose ``service`` the demo already sets."""

    def merge(into: dict[str, Any], new: dict[str, Any]) -> None:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    settings = yaml.safe_load(config.read_text()) or {}
    merge(settings, extra)
    config.write_text(yaml.safe_dump(settings, sort_keys=False))


def serve_on_any_port(config: Path) -> None:
    """Make ``config``'s HTTP service take any free port (``service.http.port: 0``), so
    that several daemons or workers of one test, or of two test runs on one machine, do
    not contend for the default 9464. A port set by the test itself is kept."""
    settings = yaml.safe_load(config.read_text()) or {}
    http = settings.setdefault("service", {}).setdefault("http", {})
    if "port" not in http:
        http["port"] = 0
        config.write_text(yaml.safe_dump(settings, sort_keys=False))


class RunProcess:
    """A `mentorpulse run` subprocess whose JSON log lines are read as they come."""

    def __init__(self, config: Path) -> None:
        serve_on_any_port(config)
        env = {**os.environ, "MENTORPULSE_CONFIG": str(config), "COLUMNS": "400"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mentorpulse", "--log-json", "run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.started = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if any(event in line for event in STARTED):
                self.started.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def settled(self) -> bool:
        """Running its jobs, or gone."""
        return self.started.is_set() or self.process.poll() is not None

    def events(self, name: str) -> list[dict[str, Any]]:
        """The log entries of event ``name`` so far."""
        found = []
        for line in list(self.lines):
            if f'"{name}"' in line:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("event") == name:
                    found.append(entry)
        return found

    def jobs(self, event: str) -> Counter[str]:
        """How many entries of ``event`` each job name has (``pool_job_started`` …)."""
        return Counter(str(e["job"]) for e in self.events(event))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_WAIT)
        self.reader.join(timeout=STOP_WAIT)


def stopped_at_end() -> Iterator[list[RunProcess]]:
    """A fixture's body: every process a test starts is stopped at its end, whatever
    happened."""
    started: list[RunProcess] = []
    try:
        yield started
    finally:
        for process in started:
            process.stop()
