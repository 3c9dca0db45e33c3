"""What every figure needs: an organisation on disk, a scratch database, counters.

Each figure runs in a process of its own (``python -m bench run`` starts one per figure),
so peak RSS is that figure's alone.
"""

from __future__ import annotations

import os
import resource
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from bench import generate
from mentorpulse.config.loader import load_config
from mentorpulse.config.roster import load_roster
from mentorpulse.daemon.jobs.context import Context
from mentorpulse.storage import repository
from mentorpulse.storage.engine import make_engine, safe_url, session_factory
from mentorpulse.storage.migrate import upgrade

PG_ENV = "MENTORPULSE_BENCH_DATABASE_URL"
PG_FALLBACK_ENV = "MENTORPULSE_TEST_DATABASE_URL"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ("sqlite", "postgresql")


def workdir() -> Path:
    return Path(os.environ.get("MENTORPULSE_BENCH_DIR", "/tmp/mentorpulse-bench"))


def org_dir(scale: str) -> Path:
    """The organisation of ``scale``, generated once and reused while its spec holds."""
    spec = generate.SCALES[scale]
    out = workdir() / f"org-{scale}"
    manifest = out / "manifest.json"
    if manifest.exists() and generate.read_manifest(out)["spec"] == asdict(spec):
        return out
    generate.write(spec, out)
    return out


def fresh_org(scale: str, name: str) -> Path:
    """A private copy of the organisation, for figures that edit its calendars."""
    import shutil

    source = org_dir(scale)
    target = workdir() / f"{name}-{scale}"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.db*", "fixtures"))
    return target


def pg_admin_url() -> str:
    url = os.environ.get(PG_ENV) or os.environ.get(PG_FALLBACK_ENV) or PG_DEFAULT
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


@contextmanager
def scratch_database(backend: str, folder: Path) -> Iterator[str]:
    """An empty database on ``backend``, removed afterwards."""
    if backend == "sqlite":
        path = folder / f"bench-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    admin_url = make_url(pg_admin_url())
    name = f"mentorpulse_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        raise SystemExit(
            f"cannot reach PostgreSQL at {safe_url(str(admin_url))} "
            f"(set {PG_ENV}): {type(exc.orig).__name__}"
        ) from None
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def open_context(org: Path, url: str) -> Context:
    """The organisation's config on database ``url``, the clock frozen at its "now"."""
    spec = generate.Spec(**generate.read_manifest(org)["spec"])
    config = load_config(org / "mentorpulse.yaml").model_copy(update={"database": url})
    roster = load_roster(config.resolve(config.roster.path), config)
    engine = make_engine(url, org)
    upgrade(engine)
    ctx = Context(config, roster, engine, session_factory(engine), clock=lambda: spec.now)
    with ctx.sessions.begin() as db:
        repository.apply_roster(db, config, roster)
    return ctx


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


@dataclass
class RowCounter:
    """Rows written (INSERT/UPDATE/DELETE rowcounts) through an engine while attached."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0

    @property
    def written(self) -> int:
        return self.inserted + self.updated + self.deleted

    def _after(self, _conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        verb = statement.lstrip()[:6].upper()
        count = max(cursor.rowcount or 0, 0)
        if verb == "INSERT":
            self.inserted += count
        elif verb == "UPDATE":
            self.updated += count
        elif verb == "DELETE":
            self.deleted += count

    @contextmanager
    def attached(self, engine: sa.Engine) -> Iterator[RowCounter]:
        event.listen(engine, "after_cursor_execute", self._after)
        try:
            yield self
        finally:
            event.remove(engine, "after_cursor_execute", self._after)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def table_count(ctx: Context, table: str) -> int:
    with ctx.engine.connect() as connection:
        return int(connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
