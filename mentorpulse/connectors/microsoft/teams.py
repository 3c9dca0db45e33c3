"""Teams attendance reports of online meetings as attendance evidence (``attendance: true``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from mentorpulse.connectors.base import AuthError, utc_from_iso
from mentorpulse.connectors.microsoft.graph import GraphClient
from mentorpulse.model import AttendanceEvidence, EventRecord

_SLACK = timedelta(hours=1)  # a report this near the occurrence is of the occurrence


def attendance_evidence(graph: GraphClient, record: EventRecord) -> list[AttendanceEvidence]:
    """Teams attendance of one occurrence, from the organiser's online meeting.

    The meeting is found by its join URL; of its attendance reports (one per occurrence
    of a recurring meeting) those that overlap the occurrence count. A refused
    permission is an :class:`AuthError` naming what to grant, so the caller stops asking
    for the rest of the run.
    """
    if not record.conference_id or not record.organizer:
        return []
    organizer = quote(record.organizer)
    what = f"the online meetings of {record.organizer}"
    found = _meetings(graph, organizer, record.conference_id, what)
    if found is None:
        return []  # the organiser is outside the tenant: no log to read
    evidence: dict[str, AttendanceEvidence] = {}
    for meeting in found.get("value", []) if isinstance(found, dict) else []:
        base = f"/users/{organizer}/onlineMeetings/{quote(str(meeting['id']), safe='')}"
        for entry in _records(graph, base, record, what):
            _add(evidence, record, entry)
    return list(evidence.values())


def _meetings(graph: GraphClient, organizer: str, join_url: str, what: str) -> Any:
    escaped = join_url.replace("'", "''")
    query = quote(f"JoinWebUrl eq '{escaped}'")
    try:
        return graph.get(
            f"/users/{organizer}/onlineMeetings?$filter={query}", what, missing_ok=True
        )
    except AuthError:
        raise AuthError(
            graph.source_id,
            f"Graph refused to read {what}: attendance needs OnlineMeetings.Read.All and "
            "OnlineMeetingArtifact.Read.All plus a Teams application access policy "
            "granted to the organiser",
        ) from None


def _records(
    graph: GraphClient, base: str, record: EventRecord, what: str
) -> list[Mapping[str, Any]]:
    """The attendance records of the meeting's reports that overlap ``record``."""
    entries: list[Mapping[str, Any]] = []
    reports = graph.get(f"{base}/attendanceReports", what)
    for report in reports.get("value", []) if isinstance(reports, dict) else []:
        began = utc_from_iso(report["meetingStartDateTime"])
        ended = utc_from_iso(report["meetingEndDateTime"])
        if ended < record.start - _SLACK or began > record.end + _SLACK:
            continue  # another occurrence of the same meeting
        detail = graph.get(
            f"{base}/attendanceReports/{quote(str(report['id']), safe='')}"
            "?$expand=attendanceRecords",
            what,
        )
        entries += detail.get("attendanceRecords", []) if detail else []
    return entries


def _add(
    evidence: dict[str, AttendanceEvidence], record: EventRecord, entry: Mapping[str, Any]
) -> None:
    email = str(entry.get("emailAddress") or "").strip().lower()
    if not email:
        return
    seconds = int(entry.get("totalAttendanceInSeconds") or 0)
    intervals = entry.get("attendanceIntervals") or []
    joins = [utc_from_iso(i["joinDateTime"]) for i in intervals if i.get("joinDateTime")]
    leaves = [utc_from_iso(i["leaveDateTime"]) for i in intervals if i.get("leaveDateTime")]
    previous = evidence.get(email)
    if previous is not None:
        seconds += previous.seconds_present
        joins += [previous.joined_at] if previous.joined_at else []
        leaves += [previous.left_at] if previous.left_at else []
    evidence[email] = AttendanceEvidence(
        provider_id=record.provider_id,
        email=email,
        seconds_present=seconds,
        joined_at=min(joins) if joins else None,
        left_at=max(leaves) if leaves else None,
        system="teams",
    )
