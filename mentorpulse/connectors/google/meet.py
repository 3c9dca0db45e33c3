"""Meet v2 conference records as attendance evidence for a Calendar event."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from googleapiclient.discovery import build_from_document
from googleapiclient.discovery_cache import get_static_doc
from googleapiclient.http import HttpRequest

from mentorpulse.connectors.base import utc_from_iso
from mentorpulse.connectors.google.auth import SCOPE_CALENDAR, SCOPE_MEET
from mentorpulse.connectors.google.calls import GoogleCalls
from mentorpulse.model import AttendanceEvidence, EventRecord
from mentorpulse.text import rfc3339_utc

MEET_PAGE_SIZE = 100  # the documented maximum of the Meet lists
_Spans = dict[str, list[tuple[datetime, datetime]]]


class MeetReader:
    """Reads the conference logs of a source's meetings (``attendance: true``)."""

    def __init__(self, calls: GoogleCalls, *, events: Any, meet_root: str) -> None:
        self._calls = calls
        self._events = events
        self._meet_root = meet_root
        self._api: Any = None

    def evidence(self, record: EventRecord, asker: str) -> list[AttendanceEvidence]:
        """Meet conference logs of ``record``'s meeting code, one evidence per party, read
        as ``asker`` (Meet shows a conference to its space's owner and to who joined).

        Parties are matched by their Google profile id, which Calendar gives per attendee
        and Meet gives per signed-in participant. A party absent from a conference that
        took place gets zero seconds: evidence of a no-show.
        """
        conferences = self._conferences(asker, record)
        if not conferences:
            return []
        by_profile = self._profiles(record.calendar_owner or asker, record)
        seen: _Spans = {}
        for conference in conferences:
            self._spans(asker, conference["name"], by_profile, seen)
        return [
            _evidence(record, email, seen.get(email, [])) for email in sorted(record.participants())
        ]

    def _meet(self) -> Any:
        if self._api is None:
            self._api = build_from_document(
                get_static_doc("meet", "v2"),
                http=self._calls.http,
                client_options={"api_endpoint": f"{self._meet_root}/"},
            )
        return self._api.conferenceRecords()

    def _conferences(self, asker: str, record: EventRecord) -> list[dict[str, Any]]:
        """Conferences in the meeting's space that started near the occurrence."""
        low = rfc3339_utc(record.start - timedelta(hours=1))
        high = rfc3339_utc(record.end + timedelta(hours=1))
        return self._listed(
            asker,
            self._meet().list,
            "conferenceRecords",
            filter=f'space.meeting_code = "{record.conference_id}" AND start_time >= "{low}" '
            f'AND start_time <= "{high}"',
        )

    def _profiles(self, holder: str, record: EventRecord) -> dict[str, str]:
        """Google profile id → email of the event's attendees and organiser."""
        event = self._calls.single(
            holder,
            self._events.get(calendarId=holder, eventId=record.provider_id.split("/", 1)[1]),
            reading="the event's attendees",
            scope=SCOPE_CALENDAR,
        )
        return {
            str(p["id"]): email
            for p in [*(event.get("attendees") or []), event.get("organizer") or {}]
            if p.get("id") and (email := _lower(p.get("email")))
        }

    def _spans(self, asker: str, conference: str, by_profile: dict[str, str], seen: _Spans) -> None:
        """Add the sessions of each invited, signed-in participant of ``conference``."""
        participants = self._meet().participants()
        for participant in self._listed(
            asker, participants.list, "participants", parent=conference
        ):
            user = (participant.get("signedinUser") or {}).get("user", "")
            email = by_profile.get(user.removeprefix("users/"))
            if email is None:
                continue  # anonymous, phone, or someone not invited
            sessions = self._listed(
                asker,
                participants.participantSessions().list,
                "participantSessions",
                parent=participant["name"],
            )
            for session in sessions:
                if session.get("startTime") and session.get("endTime"):
                    span = (utc_from_iso(session["startTime"]), utc_from_iso(session["endTime"]))
                    seen.setdefault(email, []).append(span)

    def _listed(
        self, user: str, method: Callable[..., HttpRequest], key: str, **params: str
    ) -> list[dict[str, Any]]:
        """Every item of a paged Meet list (pages of at most ``MEET_PAGE_SIZE``)."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            extra = {"pageToken": token} if token else {}
            answer = self._calls.single(
                user,
                method(pageSize=MEET_PAGE_SIZE, **params, **extra),
                reading="Meet records",
                scope=SCOPE_MEET,
            )
            items += answer.get(key) or []
            token = answer.get("nextPageToken")
            if not token:
                return items


def _evidence(
    record: EventRecord, email: str, spans: list[tuple[datetime, datetime]]
) -> AttendanceEvidence:
    return AttendanceEvidence(
        provider_id=record.provider_id,
        email=email,
        seconds_present=int(sum((e - s).total_seconds() for s, e in spans)),
        joined_at=min((s for s, _ in spans), default=None),
        left_at=max((e for _, e in spans), default=None),
        system="google_meet",
    )


def _lower(value: object) -> str | None:
    return value.strip().lower() or None if isinstance(value, str) else None
