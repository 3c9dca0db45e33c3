"""What every stage needs: the validated config, the roster, the database, a clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog
from sqlalchemy import Engine
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from mentorpulse.config.loader import load_config
from mentorpulse.config.roster import RosterPairing, load_roster
from mentorpulse.config.schema import MentorpulseConfig
from mentorpulse.rules.check import check_selectors
from mentorpulse.storage import repository
from mentorpulse.storage.engine import make_engine, session_factory
from mentorpulse.storage.migrate import upgrade
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
    sessions: sessionmaker[DbSession]
    clock: Clock = utcnow

    @classmethod
    def open(cls, config_path: Path, *, clock: Clock = utcnow, migrate: bool = True) -> Context:
        config = load_config(config_path)
        roster = load_roster(config.resolve(config.roster.path), config)
        check_selectors(config, roster, config_path)
        engine = make_engine(config.database, config.base_dir)
        if migrate:
            upgrade(engine)
        context = cls(config, roster, engine, session_factory(engine), clock)
        with context.sessions.begin() as db:
            repository.apply_roster(db, config, roster)
        return context

    def matcher(self) -> Matcher:
        refs = []
        for entry in self.roster:
            program = self.config.program(entry.program)
            assert program is not None  # the roster loader checked program ids
            refs.append(PairingRef.from_roster(entry, program.match))
        return Matcher(refs)
