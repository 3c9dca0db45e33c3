"""The sync stage: connectors → events, each page stored with its cursor in one commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from mentorpulse.connectors.base import AuthError, ConnectorError, TransientError
from mentorpulse.connectors.registry import build_connector
from mentorpulse.daemon.jobs.context import Context
from mentorpulse.storage import repository
from mentorpulse.storage.models import (
    Source,
)
from mentorpulse.tracking.match import Matcher

log = structlog.get_logger(__name__)


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


def sync_sources(ctx: Context, only: Sequence[str] | None = None) -> list[SourceResult]:
    """Pull every configured source; each page is stored with its cursor in one commit."""
    results = []
    matcher = ctx.matcher()
    fingerprint_now = repository.roster_fingerprint(ctx.roster)
    for source_config in ctx.config.sources:
        if only and source_config.id not in only:
            continue
        results.append(
            _sync_one(ctx, source_config.id, source_config.kind, matcher, fingerprint_now)
        )
    return results


def _sync_one(
    ctx: Context, source_id: str, kind: str, matcher: Matcher, roster_fp: str
) -> SourceResult:
    now = ctx.clock()
    result = SourceResult(source_id=source_id, ok=True)
    source_config = next(s for s in ctx.config.sources if s.id == source_id)
    with ctx.sessions.begin() as db:
        source = repository.ensure_source(db, source_id, kind)
        if source.roster_fingerprint != roster_fp:
            # Events were filtered against another roster: read everything again.
            source.cursor = None
            source.roster_fingerprint = roster_fp
        cursor = source.cursor
        was_healthy = source.healthy
        source.last_attempt_at = now
    connector = build_connector(
        source_config, base_dir=ctx.config.base_dir, now=now, default_zone=ctx.config.timezone
    )
    ids = None
    try:
        for page in connector.sync(cursor):
            with ctx.sessions.begin() as db:
                if ids is None:
                    ids = repository.pairing_ids(db)
                source = db.get_one(Source, source_id)
                stats = repository.store_page(
                    db,
                    source,
                    page,
                    match=matcher.match,
                    pairing_ids=ids,
                    store_titles=ctx.config.privacy.store_titles,
                )
            result.pages += 1
            result.stored += stats.stored
            result.unchanged += stats.unchanged
            result.dropped += stats.dropped
            result.deleted += stats.deleted
            result.item_errors += len(page.errors)
    except ConnectorError as error:
        result.ok = False
        result.error = error.message
        with ctx.sessions.begin() as db:
            source = db.get_one(Source, source_id)
            source.healthy = False
            source.last_error = error.message
        if was_healthy:
            event = "source_auth_failed" if isinstance(error, AuthError) else "source_failed"
            log.error(
                event,
                source=source_id,
                error=error.message,
                retriable=isinstance(error, TransientError),
            )
        return result
    with ctx.sessions.begin() as db:
        source = db.get_one(Source, source_id)
        source.healthy = True
        source.last_error = None
        source.last_success_at = now
    if not was_healthy:
        log.info("source_recovered", source=source_id)
    log.info(
        "source_synced",
        source=source_id,
        pages=result.pages,
        stored=result.stored,
        deleted=result.deleted,
        dropped=result.dropped,
        item_errors=result.item_errors,
    )
    return result
