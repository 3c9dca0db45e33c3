"""The roster's per-pairing rule columns: ``cadence`` and ``paused``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from mentorpulse.config.roster import load_roster
from mentorpulse.config.schema import MentorpulseConfig
from mentorpulse.errors import ConfigError

CONFIG = MentorpulseConfig.model_validate(
    {"programs": [{"id": "eng", "cadence": {"every": "14d"}}]}
)


def test_cadence_and_paused_columns(tmp_path: Path) -> None:
    path = tmp_path / "roster.csv"
    path.write_text(
        "program,mentor_email,mentee_email,started_on,cadence,paused\n"
        "eng,a@x.org,b@x.org,2026-01-05,7d,\n"
        "eng,a@x.org,c@x.org,2026-01-05,,yes\n"
        "eng,a@x.org,d@x.org,2026-01-05, 3w ,No\n",
        encoding="utf-8",
    )
    rows = load_roster(path, CONFIG)
    assert [(r.cadence, r.paused) for r in rows] == [
        (timedelta(days=7), False),
        (None, True),
        (timedelta(weeks=3), False),
    ]


def test_bad_cadence_and_paused_cells_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "roster.csv"
    path.write_text(
        "program,mentor_email,mentee_email,started_on,cadence,paused\n"
        "eng,a@x.org,b@x.org,2026-01-05,fortnightly,maybe\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_roster(path, CONFIG)
    assert caught.value.problems == [
        f"{path}:2: cadence: 'fortnightly': expected a duration like 14d (units: s, m, h, d, w)",
        f"{path}:2: paused: 'maybe' is not yes or no",
    ]
