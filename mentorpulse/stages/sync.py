"""The sync stage: connectors → events, each page stored with its cursor in one commit.

Around the connector contract this stage adds what every provider needs alike:

- an expired cursor starts a *staged* full resync: pages are upserted as they come, the
  ids seen are staged with them, and only when the listing completes are the events it
  did not see removed — so a crash mid-resync resumes, history is never dropped early,
  and the half-read state is marked (``Source.resync_started_at``) so rules skip it;
- a sync that would delete most of a source's events (an emptied calendar, a broken
  export) is held back and reported, and applied only when a second, full sync confirms;
- failures back off exponentially with jitter, honouring a provider's Retry-After;
- refused credentials (``AuthError``) are not retried on a timer: the source waits as
  *needs_reauth* until the operator signs in again (``mentorpulse auth ...``), changes the
  source's config, or retries it by hand (``sync --once --source ID``);
- conference logs of ended meetings are collected where the source has them enabled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from pydantic import BaseModel, SecretStr
from sqlalchemy.orm import Session as Db

from mentorpulse.backoff import SOURCE_BACKOFF
from mentorpulse.config.schema import GoogleSource, MicrosoftSource
from mentorpulse.connectors.base import (
    AttendanceSource,
    AuthError,
    Connector,
    ConnectorError,
    CursorExpired,
    TransientError,
    sanitise_page,
)
from mentorpulse.connectors.registry import build_connector
from mentorpulse.errors import unexpected_summary
from mentorpulse.stages.context import Context
from mentorpulse.storage import attendance, events, roster, sources
from mentorpulse.storage.locks import one_at_a_time
from mentorpulse.storage.models import Source
from mentorpulse.tracking.match import Matcher

log = structlog.get_logger(__name__)

# A run deleting more than this share of a source's events, and at least MIN of them,
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


class _Held(Exception):
    """A page would delete most of the source: stop before storing it."""

    def __init__(self, proposed: int, total: int) -> None:
        super().__init__(f"{proposed} of {total}")
        self.proposed = proposed
        self.total = total


def sync_sources(
    ctx: Context,
    only: Sequence[str] | None = None,
    *,
    respect_backoff: bool = False,
    progress: SyncProgress | None = None,
) -> list[SourceResult]:
    """Pull every configured source; each page is stored with its cursor in one commit.

    ``respect_backoff`` (the daemon) skips a source until its next attempt is due; an
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
        # One process at a time per source: a second waits, then reads only what changed.
        with one_at_a_time(ctx.engine, f"sync:{source_config.id}"):
            results.append(
                _sync_one(
                    ctx,
                    source_config.id,
                    source_config.kind,
                    matcher=matcher,
                    roster_fp=fingerprint_now,
                    progress=progress,
                    respect_backoff=respect_backoff,
                    retry_reauth=retry_reauth,
                )
            )
    return results


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


def _sync_one(
    ctx: Context,
    source_id: str,
    kind: str,
    *,
    matcher: Matcher,
    roster_fp: str,
    progress: SyncProgress,
    respect_backoff: bool,
    retry_reauth: bool = False,
) -> SourceResult:
    now = ctx.clock()
    result = SourceResult(source_id=source_id, ok=True)
    source_config = next(s for s in ctx.config.sources if s.id == source_id)
    with ctx.db.begin() as db:
        source = sources.ensure_source(db, source_id, kind)
        if _waits_for_operator(db, source, source_config, result, retry=retry_reauth):
            return result
        if respect_backoff and source.next_attempt_at and source.next_attempt_at > now:
            result.waiting_until = source.next_attempt_at
            return result
        if source.roster_fingerprint != roster_fp:
            # Events were filtered against another roster: read everything again, and
            # let go of those that no longer concern a pair once the reading completes.
            source.roster_fingerprint = roster_fp
            if source.cursor is not None or sources.event_count(db, source_id):
                _begin_resync(db, source, now)
        cursor = source.cursor
        was_healthy = source.healthy
        source.last_attempt_at = now
    progress.start(source_id)
    connector: Connector | None = None
    try:
        connector = build_connector(
            source_config, base_dir=ctx.config.base_dir, now=now, default_zone=ctx.config.timezone
        )
        _read(ctx, connector, cursor, matcher=matcher, result=result, progress=progress, now=now)
    except Exception as exc:  # whatever a source holds, the next one runs
        _record_failure(ctx, exc, was_healthy=was_healthy, now=now, result=result)
    finally:
        progress.stop()

    try:
        return _after_pull(ctx, connector, source_id, result, was_healthy=was_healthy, now=now)
    finally:
        closing = getattr(connector, "close", None)
        if callable(closing):  # its HTTP connections: not left to the garbage collector
            closing()


def _read(
    ctx: Context,
    connector: Connector,
    cursor: dict[str, object] | None,
    *,
    matcher: Matcher,
    result: SourceResult,
    progress: SyncProgress,
    now: datetime,
) -> None:
    """Pull from the cursor (from scratch if it expired), then reconcile and mark healthy."""
    source_id = result.source_id
    try:
        _pull(ctx, connector, source_id, cursor, matcher=matcher, result=result, progress=progress)
    except CursorExpired as expired:
        log.warning("source_cursor_expired", source=source_id, error=expired.message)
        with ctx.db.begin() as db:
            _begin_resync(db, sources.get_source(db, source_id), now)
        _pull(ctx, connector, source_id, None, matcher=matcher, result=result, progress=progress)
    with ctx.db.begin() as db:
        _finish(db, sources.get_source(db, source_id), result, now)


def _record_failure(
    ctx: Context, exc: Exception, *, was_healthy: bool, now: datetime, result: SourceResult
) -> None:
    """A held mass deletion, a typed connector error, or anything else a source raised."""
    source_id = result.source_id
    if isinstance(exc, _Held):
        with ctx.db.begin() as db:
            _hold(db, sources.get_source(db, source_id), exc, now=now, result=result)
        return
    error = exc if isinstance(exc, ConnectorError) else _unexpected(exc, source_id)
    _failed(ctx, source_id, error, was_healthy=was_healthy, now=now, result=result)


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
    source_id: str,
    result: SourceResult,
    *,
    was_healthy: bool,
    now: datetime,
) -> SourceResult:
    """Conference logs (where enabled) and the closing log line of a source's sync; a
    failed one was logged by ``_failed`` (once, when it started failing)."""
    if not result.ok and result.held_deletions is None:
        return result  # failed, or waiting for the operator to sign in again
    source_config = next(s for s in ctx.config.sources if s.id == source_id)
    wants_attendance = getattr(source_config, "attendance", False)
    if result.ok and wants_attendance and isinstance(connector, AttendanceSource):
        try:
            result.attendance_checked = _collect_attendance(ctx, connector, source_id, now)
        except Exception as exc:  # as above: this source only
            unexpected = _unexpected(exc, source_id, "collecting conference logs")
            _failed(ctx, source_id, unexpected, was_healthy=True, now=now, result=result)
            return result
    if result.ok and not was_healthy:
        log.info("source_recovered", source=source_id)
    log.info(
        "source_synced",
        source=source_id,
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
    source_id: str,
    cursor: dict[str, object] | None,
    *,
    matcher: Matcher,
    result: SourceResult,
    progress: SyncProgress,
) -> None:
    """Store each page of the connector with its cursor, one transaction per page.

    The source's row is read once: its pages only add to it (one UPDATE each)."""
    held: tuple[sources.SyncState, dict[str, int]] | None = None
    with ctx.db() as db:
        total = sources.event_count(db, source_id)
    deleted_so_far = 0
    for page in connector.sync(cursor):
        page = sanitise_page(page)  # noqa: PLW2901 - only the fit-to-store copy is used
        with ctx.db.begin() as db:
            if held is None:  # read with the first page: a sync without any reads nothing
                held = sources.sync_state(db, source_id), roster.pairing_ids(db)
            state, ids = held
            stats = events.store_page(
                db,
                state,
                page,
                match=matcher.match,
                pairing_ids=ids,
                store_titles=ctx.config.privacy.store_titles,
            )
            proposed = deleted_so_far + stats.deleted
            if state.held_deletions is None and _is_mass_deletion(proposed, total):
                raise _Held(proposed, total)  # leaving the block rolls the page back
            if state.resync_started_at is not None:
                sources.stage_seen(db, source_id, [r.provider_id for r in page.records])
        deleted_so_far += stats.deleted
        progress.page(source_id, len(page.records))
        result.pages += 1
        result.stored += stats.stored
        result.unchanged += stats.unchanged
        result.dropped += stats.dropped
        result.deleted += stats.deleted
        result.item_errors += len(page.errors)


def _is_mass_deletion(deleted: int, total: int) -> bool:
    return deleted >= MASS_DELETION_MIN and deleted > total * MASS_DELETION_SHARE


def _begin_resync(db: Db, source: Source, now: datetime) -> None:
    source.cursor = None
    source.resync_started_at = now
    sources.clear_staged(db, source.id)
    log.info("source_resync_started", source=source.id)


def _finish(db: Db, source: Source, result: SourceResult, now: datetime) -> None:
    """The listing completed: reconcile a resync, then mark the source healthy."""
    if source.resync_started_at is not None:
        unseen = sources.unseen_events(db, source.id)
        total = sources.event_count(db, source.id)
        if source.held_deletions is None and _is_mass_deletion(len(unseen), total):
            raise _Held(len(unseen), total)
        if unseen:
            result.deleted += events.delete_events(db, source.id, unseen)
        sources.clear_staged(db, source.id)
        source.resync_started_at = None
        result.resynced = True
        log.info("source_resync_completed", source=source.id, removed=len(unseen))
    if source.held_deletions is not None:
        log.warning(
            "source_deletions_confirmed",
            source=source.id,
            held=source.held_deletions,
            deleted=result.deleted,
        )
    source.held_deletions = None
    source.needs_reauth_at = None  # a retry by hand got through
    source.healthy = True
    source.last_error = None
    source.last_success_at = now
    source.failures = 0
    source.next_attempt_at = None


def _hold(db: Db, source: Source, held: _Held, *, now: datetime, result: SourceResult) -> None:
    """Report a mass deletion instead of applying it; a second full listing decides."""
    proposed, total = held.proposed, held.total
    message = (
        f"this sync would delete {proposed} of its {total} events; held back until the "
        "next sync confirms it (check that the calendars are still shared and complete)"
    )
    source.held_deletions = proposed
    source.healthy = False
    source.last_error = message
    _begin_resync(db, source, now)
    result.ok = False
    result.error = message
    result.held_deletions = proposed
    log.error("source_mass_deletion_held", source=source.id, proposed=proposed, total=total)


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
    source_id: str,
    error: ConnectorError,
    *,
    was_healthy: bool,
    now: datetime,
    result: SourceResult,
) -> None:
    """Record a failed sync: backoff for what may pass, a stop for refused credentials."""
    if isinstance(error, AuthError):
        _refused(ctx, source_id, error, now=now, result=result)
        return
    retry_after = error.retry_after if isinstance(error, TransientError) else None
    result.ok = False
    result.error = error.message
    with ctx.db.begin() as db:
        source = sources.get_source(db, source_id)
        source.healthy = False
        source.last_error = error.message
        source.failures = (source.failures or 0) + 1
        source.next_attempt_at = SOURCE_BACKOFF.next_attempt(now, source.failures, retry_after)
        result.waiting_until = source.next_attempt_at
    if was_healthy:
        log.error(
            "source_failed",
            source=source_id,
            error=error.message,
            retriable=isinstance(error, TransientError),
            retry_at=result.waiting_until.isoformat(),
        )


def _refused(
    ctx: Context, source_id: str, error: AuthError, *, now: datetime, result: SourceResult
) -> None:
    """Credentials refused: no timer retries them (a locked account stays locked, and
    retrying may lock it); the source waits, marked needs_reauth, until the operator acts.
    Logged once, when the source starts waiting."""
    source_config = next(s for s in ctx.config.sources if s.id == source_id)
    step = reauth_step(source_config)
    with ctx.db.begin() as db:
        source = sources.get_source(db, source_id)
        first = source.needs_reauth_at is None
        source.healthy = False
        source.last_error = error.message
        source.failures = (source.failures or 0) + 1
        source.needs_reauth_at = source.needs_reauth_at or now
        source.config_fingerprint = config_fingerprint(source_config)
        source.next_attempt_at = None
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


# TEMPORARY (pool branch): replaced by the shards branch
# One shard per source until the shards helper lands the real split; same contract.
@dataclass(frozen=True)
class Shard:
    """A slice of a source's calendars: one unit of sync work."""

    source_id: str
    index: int
    count: int

    @property
    def key(self) -> str:
        return f"{self.source_id}#{self.index}"


def sync_plan(ctx: Context) -> list[Shard]:
    """Every shard of every configured source."""
    return [Shard(source.id, 0, 1) for source in ctx.config.sources]


def sync_shard(
    ctx: Context,
    shard: Shard,
    *,
    respect_backoff: bool = False,
    progress: SyncProgress | None = None,
) -> SourceResult:
    """Sync one shard (here: its whole source)."""
    (result,) = sync_sources(
        ctx, [shard.source_id], respect_backoff=respect_backoff, progress=progress
    )
    return result
