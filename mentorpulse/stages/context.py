"""What every stage needs: the validated config, the roster, the database, a clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import sessionmaker

from mentorpulse.config.loader import load_config
from mentorpulse.config.roster import RosterPairing, load_roster
from mentorpulse.config.schema import MentorpulseConfig
from mentorpulse.errors import UserError, unexpected_summary
from mentorpulse.rules.check import check_selectors
from mentorpulse.storage import roster as stored_roster
from mentorpulse.storage import runs
from mentorpulse.storage.engine import make_engine, session_factory
from mentorpulse.storage.keys import configured_keys
from mentorpulse.storage.locks import exclusive
from mentorpulse.storage.migrate import open_read_only, upgrade
from mentorpulse.tracking.match import Matcher, PairingRef

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Context:
    """What every stage needs: the validated config, the roster, the database, a clock."""

    config: MentorpulseConfig
    roster: list[RosterPairing]
    engine: Engine
    db: sessionmaker[Db]
    clock: Clock = utcnow
    config_path: Path | None = None  # what :meth:`reload` reads again

    @classmethod
    def open(
        cls, config_path: Path, *, clock: Clock = utcnow, migrate: bool = True, write: bool = True
    ) -> Context:
        """Load the config and roster and open the database. A writing context migrates the
        schema and writes the roster into the database; a read-only one (``write=False``,
        for report, explain, status …) does neither, and refuses a database whose schema is
        behind: its pairings are those the last writing run stored."""
        config = load_config(config_path)
        roster = load_roster(config.resolve(config.roster.path), config)
        check_selectors(config, roster, config_path)
        configured_keys()  # a bad $MENTORPULSE_SIGNING_KEY stops here, not at the first link
        if not write:
            engine = open_read_only(config.database, config.state_dir)
            return cls(config, roster, engine, session_factory(engine), clock, config_path)
        engine = make_engine(config.database, config.state_dir)
        if migrate:
            upgrade(engine)
        context = cls(config, roster, engine, session_factory(engine), clock, config_path)
        context.apply_roster()
        return context

    def reload(self) -> None:
        """Read the config file and the roster again (SIGHUP) and put them in force.

        They are checked as :meth:`open` checks them; anything wrong raises
        :class:`UserError` (with the same file:line messages) and the config and roster
        in force stay. A new ``database`` needs a restart: it is refused too.
        """
        if self.config_path is None:
            raise UserError("this process was not started from a config file: nothing to reload")
        config = load_config(self.config_path)
        roster = load_roster(config.resolve(config.roster.path), config)
        check_selectors(config, roster, self.config_path)
        if (config.database, config.state_dir) != (self.config.database, self.config.state_dir):
            raise UserError(
                f"{self.config_path}: `database` changed: restart mentorpulse to use the new "
                "database (the config in force stays until then)"
            )
        in_force = self.config, self.roster
        self.config, self.roster = config, roster
        try:
            self.apply_roster()
        except Exception as exc:
            self.config, self.roster = in_force
            raise UserError(unexpected_summary(exc, "writing the new roster")) from None

    def apply_roster(self) -> None:
        """Write the programs, people and pairings of the roster into the database.

        Processes that start together (two daemons, a daemon and a cron job, on a fresh
        database) write it one after the other. On SQLite, where that lock would make
        every command wait behind a long write, the usual case (nothing to write) takes
        none: a process that collides with another's new rows writes again alone.
        """
        try:
            with self.db.begin() as db:
                exclusive(db, "roster", sqlite=False)
                stored_roster.apply_roster(db, self.config, self.roster)
        except (IntegrityError, OperationalError) as exc:
            log.info("roster_write_conflict", error=type(exc.orig).__name__)
            with self.db.begin() as db:
                exclusive(db, "roster")
                stored_roster.apply_roster(db, self.config, self.roster)

    def matcher(self) -> Matcher:
        refs = []
        for entry in self.roster:
            program = self.config.program(entry.program)
            assert program is not None  # the roster loader checked program ids
            refs.append(PairingRef.from_roster(entry, program.match))
        return Matcher(refs)

    @contextmanager
    def recorded(self, stage: str) -> Iterator[StageRun]:
        """Run a stage and keep in ``job_runs`` when it ran, and whether it failed and why,
        so ``status`` reports a failing stage (the daemon's jobs and the one-shot commands
        alike). The exception itself goes on to the caller."""
        run = StageRun(stage)
        try:
            yield run
        except Exception as exc:
            run.error = unexpected_summary(exc, f"running {stage}")
            run.was_failing = self._record_run(stage, error=run.error)
            raise
        run.was_failing = self._record_run(stage, error=None)

    def _record_run(self, stage: str, *, error: str | None) -> bool:
        """Record the run; returns whether the run before it had failed."""
        now = self.clock()
        try:
            try:
                return self._write_run(stage, error, now)
            except IntegrityError:  # the stage's first run in another process added the row
                return self._write_run(stage, error, now)
        except Exception:  # the database itself is failing: the log is all we have
            log.exception("job_run_not_recorded", stage=stage, error=error)
            return False

    def _write_run(self, stage: str, error: str | None, now: datetime) -> bool:
        with self.db.begin() as db:
            return runs.record_run(db, stage, error, now)


@dataclass
class StageRun:
    """One recorded run of a stage: once it is over, its short error if it raised, and
    whether the run before it had failed (so a failure is logged in full once)."""

    stage: str
    error: str | None = None
    was_failing: bool = False
