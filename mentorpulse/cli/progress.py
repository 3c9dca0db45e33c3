"""Progress bars for long stages: drawn by the CLI, heard by the stages through a callback.

Stages never import rich; they tell a :class:`~mentorpulse.stages.sync.SyncProgress`
what they stored, and on a terminal this one draws it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mentorpulse.stages.sync import LoggedProgress, SyncProgress

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


class SyncBar:
    """One spinner line per source being synced, with the events stored so far."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task: TaskID | None = None
        self.records = 0

    def start(self, source_id: str) -> None:
        self.records = 0
        self.task = self.bar.add_task(source_id, total=None)

    def page(self, source_id: str, records: int) -> None:
        self.records += records
        if self.task is not None:
            self.bar.update(
                self.task, advance=records, description=f"{source_id}: {self.records} events"
            )

    def stop(self) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None


@contextmanager
def sync_progress() -> Iterator[SyncProgress]:
    """A bar on a terminal's stderr; elsewhere the stage's own log lines."""
    if not sys.stderr.isatty():
        yield LoggedProgress()
        return
    from rich.console import Console  # a bar is drawn on a terminal only: loaded for it
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),  # source ids are data
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        yield SyncBar(bar)
