"""The sync stage: connectors → events, each page stored with its cursor in one commit.

The unit of work is a *shard*: a slice of a source's calendars (Google users, Microsoft
or Exchange mailboxes: ``shard_size`` each, sorted chunks) that any process may run while
others run the source's other shards. ICS and CalDAV sources, whose calendars are found
while reading, are one shard. Cursor state is kept per calendar (``sync_cursors``: the
connector's entry for it, its resync, its held deletions), so a change of ``shard_size``
loses nothing and two shards never write the same row; the rest of a cursor (version,
stamps) and the health are kept per shard (``sync_shards``); the source's row carries
their aggregate for ``status`` and staleness (unhealthy while any shard fails).

Around the connector contract this stage adds what every provider needs alike:

- an expired cursor starts a *staged* full resync of the calendar whose token was
  rejected (of the shard when the connector cannot say which): pages are upserted as
  they come, the ids seen are staged with them, and only when the listing completes are
  the calendar's events it did not see removed — so a crash mid-resync resumes, history
  is never dropped early, and the half-read state is marked (``Source.resync_started_at``
  while any calendar of the source is resyncing) so rules skip it;
- a sync that would delete most of one calendar's events (an emptied calendar, a broken
  export) is held back for that calendar and reported while the other calendars' changes
  go through, and applied only when a second, full listing of it confirms;
- failures back off exponentially with jitter, honouring a provider's Retry-After;
- refused credentials (``AuthError``) are not retried on a timer: the source waits as
  *needs_reauth* until the operator signs in again (``mentorpulse auth ...``), changes the
  source's config, or retries it by hand (``sync --once --source ID``);
- conference logs of ended meetings are collected where the source has them enabled.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from pydantic import BaseModel, SecretStr
from sqlalchemy.orm import Session as Db

from mentorpulse.backoff import SOURCE_BACKOFF
from mentorpulse.config.schema import CaldavSource, GoogleSource, MailboxSource, MicrosoftSource
from mentorpulse.connectors.base import (
    AttendanceSource,
    AuthError,
    Connector,
    ConnectorError,
    CursorExpired,
    TransientError,
    sanitise_page,
)
from mentorpulse.connectors.registry import SourceConfig, build_connector
from mentorpulse.errors import unexpected_summary
from mentorpulse.model import SyncPage
from mentorpulse.stages.context import Context
from mentorpulse.storage import attendance, events, roster, sources
from mentorpulse.storage.locks import one_at_a_time
from mentorpulse.storage.models import Source, SyncShard
from mentorpulse.tracking.match import Matcher

log = structlog.get_logger(__name__)

# A run deleting more than this share of a calendar's events, and at least MIN of them,
# is held until confirmed.
MASS_DELETION_SHARE = 0.5
MASS_DELETION_MIN = 10
PROGRESS_LOG_EVERY = 25  # pages, when not on a terminal

# Conference logs: asked for once a meeting has settled, re-asked until a day after it
# (reports can lag), for meetings that ended within the lookback.
ATTENDANCE_SETTLE = timedelta(minutes=15)
ATTENDANCE_RECHECK = timedelta(hours=1)
ATTENDANCE_FINAL = timedelta(days=1)
ATTENDANCE_LOOKBACK = timedelta(days=14)
ATTENDANCE_BATCH = 500


@dataclass
class SourceResult:
    source_id: str
    ok: bool
    pages: int = 0
    stored: int = 0
    unchanged: int = 0
    dropped: int = 0
    deleted: int = 0
    item_errors: int = 0
    error: str | None = None
    resynced: bool = False
    held_deletions: int | None = None
    waiting_until: datetime | None = None
    attendance_checked: int = 0
    needs_reauth: bool = False  # credentials refused: waiting for the operator


@dataclass(frozen=True, slots=True)
class Shard:
    """One unit of sync work: the ``index``-th of the ``count`` slices of a source's
    calendars (see the module docstring). Runs of one shard take turns (:attr:`key`);
    different shards of a source run side by side."""

    source_id: str
    index: int  # 0 .. count-1
    count: int

    @property
    def key(self) -> str:
        """The shard's name: its lock, its row, a queue's lock."""
        return f"{self.source_id}#{self.index}"


def sync_plan(ctx: Context) -> list[Shard]:
    """Every configured source's shards, in the order of the config."""
    return [shard for source in ctx.config.sources for shard in _plan_of(source)]


def sync_shard(
    ctx: Context,
    shard: Shard,
    *,
    respect_backoff: bool = False,
    progress: SyncProgress | None = None,
) -> SourceResult:
    """Pull one shard; each page is stored with its calendars' cursor entries in one commit.

    A second run of the same shard (another process) waits for this one, then reads only
    what changed; see :func:`sync_sources` for ``respect_backoff`` and ``progress``."""
    return _run_shard(
        ctx,
        shard,
        matcher=ctx.matcher(),
        roster_fp=roster.roster_fingerprint(ctx.roster),
        progress=progress or LoggedProgress(),
        respect_backoff=respect_backoff,
        retry_reauth=False,
    )


def sync_sources(
    ctx: Context,
    only: Sequence[str] | None = None,
    *,
    respect_backoff: bool = False,
    progress: SyncProgress | None = None,
) -> list[SourceResult]:
    """Pull every configured source, shard after shard; one result per source.

    ``respect_backoff`` (the daemon) skips a shard until its next attempt is due; an
    operator running ``sync --once`` tries at once. A source whose credentials were refused
    is skipped by both, except when named (``sync --once --source ID``): retrying by hand.
    ``progress`` hears of every stored page (by default, a log line every few pages).
    """
    retry_reauth = bool(only) and not respect_backoff
    results = []
    matcher = ctx.matcher()
    fingerprint_now = roster.roster_fingerprint(ctx.roster)
    progress = progress or LoggedProgress()
    for source_config in ctx.config.sources:
        if only and source_config.id not in only:
            continue
        parts = [
            _run_shard(
                ctx,
                shard,
                matcher=matcher,
                roster_fp=fingerprint_now,
                progress=progress,
                respect_backoff=respect_backoff,
                retry_reauth=retry_reauth,
            )
            for shard in _plan_of(source_config)
        ]
        results.append(_summed(source_config.id, parts))
    return results


def _summed(source_id: str, parts: Sequence[SourceResult]) -> SourceResult:
    """One source's result from its shards' results."""
    if len(parts) == 1:
        return parts[0]
    held = [p.held_deletions for p in parts if p.held_deletions is not None]
    waits = [p.waiting_until for p in parts if p.waiting_until is not None]
    errors = list(dict.fromkeys(p.error for p in parts if p.error))
    return SourceResult(
        source_id=source_id,
        ok=all(p.ok for p in parts),
        pages=sum(p.pages for p in parts),
        stored=sum(p.stored for p in parts),
        unchanged=sum(p.unchanged for p in parts),
        dropped=sum(p.dropped for p in parts),
        deleted=sum(p.deleted for p in parts),
        item_errors=sum(p.item_errors for p in parts),
        error="; ".join(errors) or None,
        resynced=any(p.resynced for p in parts),
        held_deletions=sum(held) if held else None,
        waiting_until=min(waits) if waits else None,
        attendance_checked=sum(p.attendance_checked for p in parts),
        needs_reauth=any(p.needs_reauth for p in parts),
    )


# -- calendars and shards -----------------------------------------------------------------


def _calendars(source_config: SourceConfig) -> list[str]:
    """The source's calendars in shard order, by the key of their cursor entries; ``[""]``
    for a source whose calendars are found while reading (one shard, one unit)."""
    if isinstance(source_config, GoogleSource):
        return sorted({u.strip().lower() for u in source_config.users})
    if isinstance(source_config, MailboxSource):
        return sorted(source_config.mailboxes)
    return [""]


def _entries_key(source_config: SourceConfig) -> str | None:
    """Where the connector's cursor keeps its per-calendar entries (None: it has none
    the stage may split)."""
    if isinstance(source_config, GoogleSource):
        return "calendars"
    if isinstance(source_config, MailboxSource):
        return "mailboxes"
    return None


def _shard_size(source_config: SourceConfig) -> int | None:
    size = getattr(source_config, "shard_size", None)
    return size if isinstance(size, int) else None


def _plan_of(source_config: SourceConfig) -> list[Shard]:
    calendars, size = _calendars(source_config), _shard_size(source_config)
    count = max(1, math.ceil(len(calendars) / size)) if size and calendars != [""] else 1
    return [Shard(source_config.id, i, count) for i in range(count)]


def _calendars_of(source_config: SourceConfig, shard: Shard) -> list[str]:
    """The shard's calendars (none if the config changed since the shard was planned)."""
    calendars, size = _calendars(source_config), _shard_size(source_config)
    if shard.count != len(_plan_of(source_config)):
        return []
    if shard.count == 1 or size is None:
        return calendars
    return calendars[shard.index * size : (shard.index + 1) * size]


def _narrowed(source_config: SourceConfig, calendars: Sequence[str]) -> SourceConfig:
    """The source's config for these calendars only: a shard's connector reads no other."""
    if isinstance(source_config, GoogleSource):
        return source_config.model_copy(update={"users": tuple(calendars)})
    if isinstance(source_config, MailboxSource):
        return source_config.model_copy(update={"mailboxes": tuple(calendars)})
    return source_config


def stored_cursor(db: Db, source_config: SourceConfig) -> dict[str, object] | None:
    """The source's whole cursor as stored (the first shard's part and every calendar's
    entry), as its connector would read it: for tools and tests."""
    return sources.stored_cursor(db, source_config.id, _entries_key(source_config))


def _split(
    cursor: Mapping[str, object], key: str | None, calendars: Sequence[str]
) -> tuple[dict[str, object], dict[str, object | None]]:
    """A connector's cursor as the shard's part and each calendar's entry."""
    if key is None:
        return dict(cursor), {}
    entries = cursor.get(key)
    found: Mapping[str, object] = entries if isinstance(entries, Mapping) else {}
    rest = {k: v for k, v in cursor.items() if k != key}
    return rest, {c: found.get(c) for c in calendars}


def _joined(
    rest: Mapping[str, object] | None,
    key: str | None,
    entries: Mapping[str, object | None],
) -> dict[str, object] | None:
    """The connector's cursor from the shard's part and its calendars' entries."""
    if key is None:
        return dict(rest) if rest is not None else None
    present = {c: e for c, e in entries.items() if e is not None}
    if rest is None and not present:
        return None
    return {**(rest or {}), key: present}


class SyncProgress(Protocol):
    """What a long sync tells whoever watches it: the CLI draws a bar (cli/progress.py),
    everything else logs (:class:`LoggedProgress`). Stages never draw."""

    def start(self, source_id: str) -> None: ...

    def page(self, source_id: str, records: int) -> None: ...

    def stop(self) -> None: ...


class LoggedProgress:
    """Progress for the daemon and a non-terminal: a log line every few pages."""

    def __init__(self) -> None:
        self.pages = 0
        self.records = 0

    def start(self, source_id: str) -> None:
        self.pages = self.records = 0

    def page(self, source_id: str, records: int) -> None:
        self.pages += 1
        self.records += records
        if self.pages % PROGRESS_LOG_EVERY == 0:
            log.info("sync_progress", source=source_id, pages=self.pages, events=self.records)

    def stop(self) -> None:
        """Nothing to take down: the log lines stand."""


class _Held(Exception):
    """A page would delete most of one calendar: stop before storing it."""

    def __init__(self, calendar: str, proposed: int, total: int) -> None:
        super().__init__(f"{proposed} of {total}")
        self.calendar = calendar
        self.proposed = proposed
        self.total = total


def _run_shard(
    ctx: Context,
    shard: Shard,
    *,
    matcher: Matcher,
    roster_fp: str,
    progress: SyncProgress,
    respect_backoff: bool,
    retry_reauth: bool,
) -> SourceResult:
    # One process at a time per shard: a second waits, then reads only what changed.
    with one_at_a_time(ctx.engine, f"sync:{shard.key}"):
        return _sync_one(
            ctx,
            shard,
            matcher=matcher,
            roster_fp=roster_fp,
            progress=progress,
            respect_backoff=respect_backoff,
            retry_reauth=retry_reauth,
        )


def _sync_one(
    ctx: Context,
    shard: Shard,
    *,
    matcher: Matcher,
    roster_fp: str,
    progress: SyncProgress,
    respect_backoff: bool,
    retry_reauth: bool = False,
) -> SourceResult:
    now = ctx.clock()
    source_id = shard.source_id
    result = SourceResult(source_id=source_id, ok=True)
    source_config = _config_of(ctx, source_id)
    calendars = _calendars_of(source_config, shard)
    if not calendars:
        return result  # planned under another config: the next plan has it
    with ctx.db.begin() as db:
        sources.ensure_source(db, source_id, source_config.kind)
        sources.lock_source(db, source_id)
        source = sources.get_source(db, source_id)
        if _waits_for_operator(db, source, source_config, result, retry=retry_reauth):
            return result
        row = sources.ensure_shard(db, source_id, shard.key)
        if respect_backoff and row.next_attempt_at and row.next_attempt_at > now:
            result.waiting_until = row.next_attempt_at
            return result
        states = sources.calendar_states(db, source_id, calendars)
        # Events filtered against another roster: read everything again, and let go of
        # those that no longer concern a pair once the reading completes.
        if (row.roster_fingerprint or source.roster_fingerprint) != roster_fp and (
            _holds_anything(db, source_id, row, states)
        ):
            _begin_resync(db, shard, calendars, now, whole=True)
        row.roster_fingerprint = source.roster_fingerprint = roster_fp
        was_healthy = row.healthy
        row.last_attempt_at = now
        _aggregate(db, source_config)
    progress.start(source_id)
    connector: Connector | None = None
    try:
        connector = _read(
            ctx,
            shard,
            source_config,
            calendars,
            matcher=matcher,
            result=result,
            progress=progress,
            now=now,
        )
    except Exception as exc:  # whatever a source holds, the next one runs
        _record_failure(ctx, shard, exc, was_healthy=was_healthy, now=now, result=result)
    finally:
        progress.stop()

    try:
        return _after_pull(ctx, connector, shard, result, was_healthy=was_healthy, now=now)
    finally:
        _close(connector)


def _config_of(ctx: Context, source_id: str) -> SourceConfig:
    return next(s for s in ctx.config.sources if s.id == source_id)


def _close(connector: Connector | None) -> None:
    closing = getattr(connector, "close", None)
    if callable(closing):  # its HTTP connections: not left to the garbage collector
        closing()


def _holds_anything(
    db: Db, source_id: str, row: SyncShard, states: Mapping[str, sources.CalendarState]
) -> bool:
    """Whether the shard has read anything yet (a cursor, or events of its calendars)."""
    if row.cursor is not None or any(s.entry is not None for s in states.values()):
        return True
    return any(sources.event_counts_by_calendar(db, source_id, list(states)).values())


def _read(
    ctx: Context,
    shard: Shard,
    source_config: SourceConfig,
    calendars: Sequence[str],
    *,
    matcher: Matcher,
    result: SourceResult,
    progress: SyncProgress,
    now: datetime,
) -> Connector | None:
    """Pull the shard's calendars from their cursors: a calendar whose cursor expired is
    read from scratch, one whose deletions are held now is left out of the rest of the
    run; then reconcile and mark the shard healthy. Returns the last connector."""
    held_now: set[str] = set()
    expired: set[str] = set()
    connector: Connector | None = None
    pending = list(calendars)  # those still to read in this run
    try:
        while active := [c for c in pending if c not in held_now]:
            _close(connector)
            connector = build_connector(
                ctx.config.with_state_paths(_narrowed(source_config, active)),
                base_dir=ctx.config.base_dir,
                now=now,
                default_zone=ctx.config.timezone,
            )
            try:
                _pull(
                    ctx,
                    connector,
                    shard,
                    source_config,
                    active,
                    matcher=matcher,
                    result=result,
                    progress=progress,
                )
                break
            except CursorExpired as gone:
                again = _expired(ctx, shard, source_config, active, gone, expired=expired, now=now)
                pending = again or pending
            except _Held as held:
                with ctx.db.begin() as db:
                    sources.lock_source(db, shard.source_id)
                    _hold(db, shard, held, now=now, result=result)
                    _aggregate(db, source_config)
                held_now.add(held.calendar)
    except BaseException:  # a failed pull, or a shard handed back: its connections closed
        _close(connector)
        raise
    with ctx.db.begin() as db:
        sources.lock_source(db, shard.source_id)
        reading = [c for c in calendars if c not in held_now]
        _finish(db, shard, source_config, reading, result=result, now=now)
        _aggregate(db, source_config)
    return connector


def _expired(
    ctx: Context,
    shard: Shard,
    source_config: SourceConfig,
    active: Sequence[str],
    gone: CursorExpired,
    *,
    expired: set[str],
    now: datetime,
) -> list[str] | None:
    """Begin the resync an expired cursor calls for: of the calendars it names, else of
    all ``active``. Returns what is left to read in this run (None: ``active`` again)."""
    named = [c for c in gone.calendars if c in active]
    # A CalDAV calendar, found while reading: its events are those under its path.
    inner = [c for c in gone.calendars if c] if not named and _scoped(source_config) else []
    again = named or inner or list(active)
    if expired.issuperset(again):
        raise gone  # read from scratch already in this run: a fault, not an expiry
    expired.update(again)
    log.warning(
        "source_cursor_expired",
        source=shard.source_id,
        shard=shard.key,
        calendars=len(again),
        calendar=again[0] if named or inner else None,
        error=gone.message,
    )
    with ctx.db.begin() as db:
        sources.lock_source(db, shard.source_id)
        sources.calendar_states(db, shard.source_id, again)  # their rows, if new
        _begin_resync(db, shard, again, now, whole=not (named or inner))
        _forget_entries(db, shard, inner)
        _aggregate(db, source_config)
    return named if named and gone.others_complete else None


def _scoped(source_config: SourceConfig) -> bool:
    """Whether the source's calendars are found while reading and each event's scope
    begins with its calendar's key (CalDAV: the calendar's path, then the object's)."""
    return isinstance(source_config, CaldavSource)


def _forget_entries(db: Db, shard: Shard, calendars: Sequence[str]) -> None:
    """Drop these calendars' entries from the shard's part of the cursor (where a source
    whose calendars are found while reading keeps them): they are read from scratch."""
    rest = sources.shard_cursor(db, shard.source_id, shard.key)
    entries = rest.get("calendars") if rest else None
    if not calendars or rest is None or not isinstance(entries, dict):
        return
    kept = {k: v for k, v in entries.items() if k not in calendars}
    sources.write_shard_cursor(db, shard.source_id, shard.key, {**rest, "calendars": kept})


def _aggregate(db: Db, source_config: SourceConfig) -> None:
    # A calendar cut from the config no longer counts (its resync or held deletions would
    # hold the source forever); a source whose calendars are found while reading has none.
    configured = set(_calendars(source_config)) if _entries_key(source_config) else None
    sources.aggregate(
        db, source_config.id, [s.key for s in _plan_of(source_config)], calendars=configured
    )


def _record_failure(
    ctx: Context,
    shard: Shard,
    exc: Exception,
    *,
    was_healthy: bool,
    now: datetime,
    result: SourceResult,
) -> None:
    """A typed connector error, or anything else a source raised."""
    error = exc if isinstance(exc, ConnectorError) else _unexpected(exc, shard.source_id)
    _failed(ctx, shard, error, was_healthy=was_healthy, now=now, result=result)


def _waits_for_operator(
    db: Db, source: Source, source_config: BaseModel, result: SourceResult, *, retry: bool
) -> bool:
    """A source whose credentials were refused waits until its config changes (then it is
    tried again) or the operator retries it by hand; says so in ``result``."""
    if (
        source.needs_reauth_at is not None
        and source.config_fingerprint != config_fingerprint(source_config)
        and sources.clear_needs_reauth(db, source.id)
    ):
        log.info("source_reauth_cleared", source=source.id, reason="config_changed")
    if source.needs_reauth_at is None or retry:
        return False
    result.ok = False
    result.needs_reauth = True
    by_hand = (  # a sign-in source may also have been mended at the provider
        f" (or retry by hand: `mentorpulse sync --once --source {source.id}`)"
        if _sign_in_command(source_config)
        else ""
    )
    result.error = (
        f"needs_reauth: {source.last_error or 'credentials refused'}; skipped until the "
        f"operator acts: {reauth_step(source_config)}{by_hand}"
    )
    return True


def _after_pull(
    ctx: Context,
    connector: Connector | None,
    shard: Shard,
    result: SourceResult,
    *,
    was_healthy: bool,
    now: datetime,
) -> SourceResult:
    """Conference logs (where enabled; by the first shard, for the whole source) and the
    closing log line of a shard's sync; a failed one was logged by ``_failed`` (once,
    when it started failing)."""
    source_id = shard.source_id
    if not result.ok and result.held_deletions is None:
        return result  # failed, or waiting for the operator to sign in again
    source_config = _config_of(ctx, source_id)
    wants_attendance = getattr(source_config, "attendance", False) and shard.index == 0
    if result.ok and wants_attendance and isinstance(connector, AttendanceSource):
        try:
            result.attendance_checked = _collect_attendance(ctx, connector, source_id, now)
        except Exception as exc:  # as above: this source only
            unexpected = _unexpected(exc, source_id, "collecting conference logs")
            _failed(ctx, shard, unexpected, was_healthy=True, now=now, result=result)
            return result
    if result.ok and not was_healthy:
        log.info("source_recovered", source=source_id, shard=shard.key)
    log.info(
        "source_synced",
        source=source_id,
        shard=shard.key,
        ok=result.ok,
        pages=result.pages,
        stored=result.stored,
        deleted=result.deleted,
        dropped=result.dropped,
        item_errors=result.item_errors,
        resynced=result.resynced,
        held_deletions=result.held_deletions,
    )
    return result


def _pull(
    ctx: Context,
    connector: Connector,
    shard: Shard,
    source_config: SourceConfig,
    calendars: Sequence[str],
    *,
    matcher: Matcher,
    result: SourceResult,
    progress: SyncProgress,
) -> None:
    """Store each page of the connector with its calendars' cursor entries, one
    transaction per page; a page that would delete most of a calendar is not stored."""
    source_id, key = shard.source_id, _entries_key(source_config)
    with ctx.db.begin() as db:
        states = sources.calendar_states(db, source_id, calendars)
        totals = sources.event_counts_by_calendar(db, source_id, calendars)
        rest: Mapping[str, object] | None = sources.shard_cursor(db, source_id, shard.key)
        inner = _inner_resyncs(db, source_config)
    written: dict[str, object | None] = {c: s.entry for c, s in states.items()}
    resyncing = {c for c, s in states.items() if s.resync_started_at is not None}
    holding = {c for c, s in states.items() if s.held_deletions is not None}
    deleted_so_far: Counter[str] = Counter()
    pairing_ids: dict[str, int] | None = None
    for page in connector.sync(_joined(rest, key, written)):
        page = sanitise_page(page)  # noqa: PLW2901 - only the fit-to-store copy is used
        with ctx.db.begin() as db:
            sources.lock_source(db, source_id)  # the shards of a source store in turn
            if pairing_ids is None:  # read with the first page: a sync without any reads none
                pairing_ids = roster.pairing_ids(db)
            stats = events.store_page(
                db,
                sources.sync_state(db, source_id),
                replace(page, cursor=None),  # stored per calendar, below
                match=matcher.match,
                pairing_ids=pairing_ids,
                store_titles=ctx.config.privacy.store_titles,
            )
            deleted = _per_calendar(stats.deleted_by_owner, split=key is not None)
            for calendar, count in deleted.items():
                proposed = deleted_so_far[calendar] + count
                total = totals.get(calendar, 0)
                if calendar not in holding and _is_mass_deletion(proposed, total):
                    raise _Held(calendar, proposed, total)  # leaving the block rolls back
            if resyncing or inner:
                _stage(db, source_id, page, resyncing, inner, split=key is not None)
            if page.cursor is not None:
                rest = _store_cursor(db, shard, page.cursor, key, written=written, rest=rest)
        deleted_so_far.update(deleted)
        progress.page(source_id, len(page.records))
        result.pages += 1
        result.stored += stats.stored
        result.unchanged += stats.unchanged
        result.dropped += stats.dropped
        result.deleted += stats.deleted
        result.item_errors += len(page.errors)


def _store_cursor(
    db: Db,
    shard: Shard,
    cursor: Mapping[str, object],
    key: str | None,
    *,
    written: dict[str, object | None],
    rest: Mapping[str, object] | None,
) -> Mapping[str, object]:
    """A page's cursor: the entries of the calendars it changed, and the shard's part if it
    changed. ``written`` (each calendar's entry as stored) is kept up to date; returns
    the shard's part as stored now."""
    new_rest, entries = _split(cursor, key, list(written))
    changed = {c: e for c, e in entries.items() if e != written.get(c)}
    sources.write_entries(db, shard.source_id, changed)
    written.update(changed)
    if new_rest != rest:
        sources.write_shard_cursor(db, shard.source_id, shard.key, new_rest)
    return new_rest


def _per_calendar(by_owner: Mapping[str | None, int], *, split: bool) -> dict[str, int]:
    """Deletions by calendar; a source without calendar entries is one calendar (``""``)."""
    if not split:
        total = sum(by_owner.values())
        return {"": total} if total else {}
    return {owner: n for owner, n in by_owner.items() if owner is not None}


def _inner_resyncs(db: Db, source_config: SourceConfig) -> list[str]:
    """The calendars of a CalDAV source being read from scratch (see :func:`_scoped`)."""
    if not _scoped(source_config):
        return []
    return [c for c in sources.resyncing(db, source_config.id) if c]


def _stage(
    db: Db,
    source_id: str,
    page: SyncPage,
    resyncing: set[str],
    inner: Sequence[str],
    *,
    split: bool,
) -> None:
    """Stage the page's records of the calendars being read from scratch as seen."""
    by_calendar: dict[str, list[str]] = {}
    for record, scope in zip(page.records, page.record_scopes(), strict=True):
        if not split and "" in resyncing:
            by_calendar.setdefault("", []).append(record.provider_id)
        if split and record.calendar_owner in resyncing:
            by_calendar.setdefault(record.calendar_owner, []).append(record.provider_id)
        for calendar in inner:
            if scope is not None and scope.startswith(calendar):
                by_calendar.setdefault(calendar, []).append(record.provider_id)
    for calendar, ids in by_calendar.items():
        sources.stage_seen(db, source_id, ids, calendar)


def _is_mass_deletion(deleted: int, total: int) -> bool:
    return deleted >= MASS_DELETION_MIN and deleted > total * MASS_DELETION_SHARE


def _begin_resync(
    db: Db, shard: Shard, calendars: Sequence[str], now: datetime, *, whole: bool
) -> None:
    """Read these calendars from scratch, staged; ``whole``: the shard's part of the
    cursor too (the connector rejected all of it)."""
    sources.begin_resync(db, shard.source_id, calendars, now)
    if whole:
        sources.write_shard_cursor(db, shard.source_id, shard.key, None)
    log.info(
        "source_resync_started",
        source=shard.source_id,
        shard=shard.key,
        calendars=len(calendars),
        calendar=calendars[0] or None if len(calendars) == 1 else None,
    )


def _finish(
    db: Db,
    shard: Shard,
    source_config: SourceConfig,
    calendars: Sequence[str],
    *,
    result: SourceResult,
    now: datetime,
) -> None:
    """The listing completed: reconcile each calendar's resync (holding a mass deletion
    for confirmation), then mark the shard healthy unless deletions are held."""
    source_id = shard.source_id
    inner = _inner_resyncs(db, source_config)
    states = sources.calendar_states(db, source_id, [*calendars, *inner])
    resyncing = [c for c, s in states.items() if s.resync_started_at is not None]
    totals = sources.event_counts_by_calendar(
        db, source_id, [c for c in resyncing if c not in inner]
    )
    for calendar in inner:
        totals[calendar] = sources.event_count_under(db, source_id, calendar)
    for calendar in resyncing:
        unseen = sources.unseen_events(db, source_id, calendar, by_scope=calendar in inner)
        _reconcile(
            db,
            shard,
            calendar,
            states[calendar],
            unseen=unseen,
            total=totals[calendar],
            result=result,
            now=now,
        )
    row = sources.ensure_shard(db, source_id, shard.key)
    if result.held_deletions is not None:
        row.healthy = False
        row.last_error = result.error
        return
    sources.get_source(db, source_id).needs_reauth_at = None  # a retry by hand got through
    row.healthy = True
    row.last_error = None
    row.last_success_at = now
    row.failures = 0
    row.next_attempt_at = None


def _reconcile(
    db: Db,
    shard: Shard,
    calendar: str,
    state: sources.CalendarState,
    *,
    unseen: list[str],
    total: int,
    result: SourceResult,
    now: datetime,
) -> None:
    """A calendar read from scratch: remove what the listing did not see, unless that is
    most of it and not yet confirmed (then it is held, and read from scratch again)."""
    source_id = shard.source_id
    if state.held_deletions is None and _is_mass_deletion(len(unseen), total):
        _hold(db, shard, _Held(calendar, len(unseen), total), now=now, result=result)
        return
    if unseen:
        result.deleted += events.delete_events(db, source_id, unseen)
    if state.held_deletions is not None:
        log.warning(
            "source_deletions_confirmed",
            source=source_id,
            calendar=calendar or None,
            held=state.held_deletions,
            deleted=len(unseen),
        )
    sources.resync_done(db, source_id, calendar)
    result.resynced = True
    log.info(
        "source_resync_completed",
        source=source_id,
        calendar=calendar or None,
        removed=len(unseen),
    )


def _hold(db: Db, shard: Shard, held: _Held, *, now: datetime, result: SourceResult) -> None:
    """Report a mass deletion of one calendar instead of applying it; a second full
    listing of that calendar decides."""
    proposed, total, calendar = held.proposed, held.total, held.calendar
    of = f"calendar {calendar}" if calendar else "this sync"
    message = (
        f"{of} would delete {proposed} of its {total} events; held back until the "
        "next sync confirms it (check that the calendars are still shared and complete)"
    )
    sources.hold_deletions(db, shard.source_id, calendar, proposed, now)
    if not calendar:  # the source is one calendar: its whole cursor lives in the shard
        sources.write_shard_cursor(db, shard.source_id, shard.key, None)
    _forget_entries(db, shard, [calendar])  # a CalDAV calendar's lives there too
    result.ok = False
    result.error = message if result.error is None else f"{result.error}; {message}"
    result.held_deletions = (result.held_deletions or 0) + proposed
    log.error(
        "source_mass_deletion_held",
        source=shard.source_id,
        calendar=calendar or None,
        proposed=proposed,
        total=total,
    )


class _Unexpected(ConnectorError):
    """An error no connector typed (a database refusal, a bug, a library's surprise)."""


def _unexpected(exc: Exception, source_id: str, doing: str = "syncing") -> _Unexpected:
    """The short ``last_error`` of an error no connector typed (see unexpected_summary)."""
    return _Unexpected(
        source_id,
        f"{unexpected_summary(exc, doing)}; retried with backoff "
        "(if it persists, report this line as a bug)",
    )


def _failed(
    ctx: Context,
    shard: Shard,
    error: ConnectorError,
    *,
    was_healthy: bool,
    now: datetime,
    result: SourceResult,
) -> None:
    """Record a failed shard: backoff for what may pass, a stop for refused credentials."""
    if isinstance(error, AuthError):
        _refused(ctx, shard, error, now=now, result=result)
        return
    retry_after = error.retry_after if isinstance(error, TransientError) else None
    result.ok = False
    result.error = error.message
    source_config = _config_of(ctx, shard.source_id)
    with ctx.db.begin() as db:
        sources.lock_source(db, shard.source_id)
        row = sources.ensure_shard(db, shard.source_id, shard.key)
        row.healthy = False
        row.last_error = error.message
        row.failures = (row.failures or 0) + 1
        row.next_attempt_at = SOURCE_BACKOFF.next_attempt(now, row.failures, retry_after)
        result.waiting_until = row.next_attempt_at
        _aggregate(db, source_config)
    if was_healthy:
        log.error(
            "source_failed",
            source=shard.source_id,
            shard=shard.key,
            error=error.message,
            retriable=isinstance(error, TransientError),
            retry_at=result.waiting_until.isoformat(),
        )


def _refused(
    ctx: Context, shard: Shard, error: AuthError, *, now: datetime, result: SourceResult
) -> None:
    """Credentials refused: no timer retries them (a locked account stays locked, and
    retrying may lock it); the source (all its shards: they share the credentials) waits,
    marked needs_reauth, until the operator acts. Logged once, when the source starts
    waiting."""
    source_id = shard.source_id
    source_config = _config_of(ctx, source_id)
    step = reauth_step(source_config)
    with ctx.db.begin() as db:
        sources.lock_source(db, source_id)
        source = sources.get_source(db, source_id)
        first = source.needs_reauth_at is None
        source.needs_reauth_at = source.needs_reauth_at or now
        source.config_fingerprint = config_fingerprint(source_config)
        row = sources.ensure_shard(db, source_id, shard.key)
        row.healthy = False
        row.last_error = error.message
        row.failures = (row.failures or 0) + 1
        row.next_attempt_at = None
        _aggregate(db, source_config)
    result.ok = False
    result.needs_reauth = True
    result.error = f"{error.message}; needs_reauth, not retried on a timer: {step}"
    if first:
        log.error(
            "source_auth_failed",  # the event alerts already watch for
            source=source_id,
            error=error.message,
            needs_reauth=True,
            next_step=step,
        )


def _sign_in_command(source_config: BaseModel) -> str | None:
    """The `mentorpulse auth ...` that renews this source's credentials, if one does."""
    source_id = getattr(source_config, "id", "?")
    if isinstance(source_config, GoogleSource) and source_config.oauth_client is not None:
        return f"mentorpulse auth google --source {source_id}"
    if isinstance(source_config, MicrosoftSource) and source_config.auth == "device_code":
        return f"mentorpulse auth microsoft --source {source_id}"
    return None


def reauth_step(source_config: BaseModel) -> str:
    """What the operator does about refused credentials, for this kind of source."""
    source_id = getattr(source_config, "id", "?")
    command = _sign_in_command(source_config)
    if command is not None:
        return f"sign in again with `{command}`"
    return (
        f"fix the credentials of source {source_id} in mentorpulse.yaml (or the environment "
        "variable they name), or grant what the error names, then retry with "
        f"`mentorpulse sync --once --source {source_id}`"
    )


def config_fingerprint(source_config: BaseModel) -> str:
    """A digest of the source's config section, to tell when the operator changed it; its
    secrets enter only as scrypt digests (costly to guess back from the stored value), and
    only a refused source computes it."""

    def plain(value: Any) -> Any:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value().encode()
            return hashlib.scrypt(secret, salt=b"mentorpulse-source", n=2**14, r=8, p=1).hex()
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    text = json.dumps(plain(source_config.model_dump()), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _collect_attendance(
    ctx: Context, connector: AttendanceSource, source_id: str, now: datetime
) -> int:
    """Ask the conference system who joined the source's recently ended meetings."""
    with ctx.db() as db:
        due = attendance.events_due_for_attendance(
            db,
            source_id,
            ended_before=now - ATTENDANCE_SETTLE,
            ended_after=now - ATTENDANCE_LOOKBACK,
            checked_before=now - ATTENDANCE_RECHECK,
            final_after=ATTENDANCE_FINAL,
            limit=ATTENDANCE_BATCH,
        )
    checked = 0
    for event_id, record in due:
        try:
            evidence = connector.attendance_evidence(record)
        except ConnectorError as error:
            log.warning(
                "attendance_unavailable",
                source=source_id,
                error=error.message,
                auth=isinstance(error, AuthError),
            )
            break
        with ctx.db.begin() as db:
            attendance.store_attendance(db, event_id, evidence, checked_at=now)
        checked += 1
    if checked:
        log.info("attendance_checked", source=source_id, events=checked)
    return checked
