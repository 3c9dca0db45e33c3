"""What every figure needs: an organisation on disk, a scratch database, counters.

Each figure runs in a process of its own (``python -m bench run`` starts one per figure),
so peak RSS is that figure's alone.
"""

from __future__ import annotations

import json
import os
import re
import resource
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from mentorpulse.config.loader import load_config
from mentorpulse.config.roster import load_roster
from mentorpulse.sample import SCALES, Spec, write
from mentorpulse.stages.context import Context
from mentorpulse.storage import roster as stored_roster
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
    spec = SCALES[scale]
    out = workdir() / f"org-{scale}"
    if _current(out, spec):
        return out
    forget_ingested(scale)
    if out.exists():  # no file of the older organisation may stay among the new ones
        import shutil

        shutil.rmtree(out)
    written = write(spec, out)
    summary = {"spec": asdict(written.spec), "counts": written.counts}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    (out / GENERATOR_FILE).write_text(_generator_digest())
    return out


GENERATOR_FILE = "generator.sha256"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class Summary:
    """The spec and counts of an organisation's manifest, without its planted sessions:
    parsing those (large: 39 MB, 318,679 sessions) took 200 MB, which a figure's peak RSS
    then counted as its own."""

    spec: Spec
    counts: dict[str, int]


def summary(org: Path) -> Summary:
    """What a figure needs of the manifest, read from the summary ``org_dir`` wrote."""
    data = json.loads((org / SUMMARY_FILE).read_text())
    return Summary(Spec(**data["spec"]), data["counts"])


def _generator_digest() -> str:
    """A digest of the generator's source: the same spec from another generator is
    another organisation."""
    import hashlib

    import mentorpulse.sample as sample

    digest = hashlib.sha256()
    for path in sorted(Path(sample.__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _current(out: Path, spec: object) -> bool:
    """Whether ``out`` holds the organisation of ``spec`` as this generator writes it (one
    another generator wrote, or whose manifest this one cannot read, is written again)."""
    written_by = out / GENERATOR_FILE
    if not written_by.exists() or written_by.read_text() != _generator_digest():
        return False
    try:
        return summary(out).spec == spec
    except (OSError, KeyError, TypeError, ValueError):
        return False


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
            for lock in folder.glob(f"{path.name}.*.lock"):  # storage.locks' file locks
                lock.unlink(missing_ok=True)
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


RUN_ENV = "MENTORPULSE_BENCH_RUN"


def run_id() -> str:
    """This run's name: ``bench run`` sets it for the figures it starts, a figure run alone
    makes its own. Kept databases carry it, so two runs on one server never share one."""
    return os.environ.setdefault(RUN_ENV, uuid.uuid4().hex[:8])


def _cache_name(scale: str) -> str:
    return f"mentorpulse_bench_cache_{scale}_{run_id()}"


def forget_run(scales: Iterable[str]) -> None:
    """Drop what this run kept on PostgreSQL (its ingested copies), at the end of the run."""
    try:
        admin = sa.create_engine(pg_admin_url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            for scale in scales:
                name = _cache_name(scale)
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    except sa.exc.OperationalError:
        pass  # no PostgreSQL here: nothing kept there either


def forget_ingested(scale: str) -> None:
    """Drop the kept ingested copies of ``scale`` (its organisation is being rewritten)."""
    (workdir() / f"ingested-{scale}.db").unlink(missing_ok=True)
    try:
        admin = sa.create_engine(pg_admin_url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{_cache_name(scale)}"'))
        admin.dispose()
    except sa.exc.OperationalError:
        pass  # no PostgreSQL here: nothing kept there either


def save_ingested(scale: str, backend: str, url: str) -> None:
    """Keep the database of a full ingest, so later figures start from it, not anew."""
    if backend == "sqlite":
        import shutil

        target = workdir() / f"ingested-{scale}.db"
        shutil.copyfile(make_url(url).database or "", target)
        return
    admin = sa.create_engine(pg_admin_url(), isolation_level="AUTOCOMMIT")
    name = _cache_name(scale)
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        source = make_url(url).database
        connection.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{source}"'))
    admin.dispose()


@contextmanager
def ingested_database(scale: str, backend: str, org: Path) -> Iterator[str]:
    """A fresh copy of the organisation fully ingested; ingests it first if no copy is kept.

    ``org`` must hold the same calendars as the kept copy (a copy made by
    :func:`fresh_org`), so the stored cursors still describe its files.
    """
    import shutil

    cached = workdir() / f"ingested-{scale}.db"
    have = cached.exists() if backend == "sqlite" else _pg_has(_cache_name(scale))
    with scratch_database(backend, workdir()) as url:
        if not have:
            ctx = open_context(org, url)
            from mentorpulse.stages import sync_sources

            sync_sources(ctx)
            ctx.engine.dispose()
            save_ingested(scale, backend, url)
        elif backend == "sqlite":
            shutil.copyfile(cached, make_url(url).database or "")
        else:
            admin = sa.create_engine(pg_admin_url(), isolation_level="AUTOCOMMIT")
            name = make_url(url).database
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
                connection.execute(
                    sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{_cache_name(scale)}"')
                )
            admin.dispose()
        yield url


def _pg_has(name: str) -> bool:
    admin = sa.create_engine(pg_admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            found = connection.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
    finally:
        admin.dispose()
    return found is not None


def open_context(org: Path, url: str) -> Context:
    """The organisation's config on database ``url``, the clock frozen at its "now"."""
    spec = summary(org).spec
    config = load_config(org / "mentorpulse.yaml").model_copy(update={"database": url})
    roster = load_roster(config.resolve(config.roster.path), config)
    engine = make_engine(url, org)
    upgrade(engine)
    ctx = Context(config, roster, engine, session_factory(engine), clock=lambda: spec.now)
    with ctx.db.begin() as db:
        stored_roster.apply_roster(db, config, roster)
    return ctx


def reset_peak_rss() -> bool:
    """Start the peak RSS over from the current RSS (Linux: ``/proc/self/clear_refs``),
    so :func:`peak_rss_mb` tells the measured stage's peak, not the setup's (a copy of the
    organisation, its day of edits planned in memory). False where that is not possible:
    the peak is then the whole process's."""
    try:
        with open("/proc/self/clear_refs", "w") as control:
            control.write("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (or since :func:`reset_peak_rss`),
    in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


_WRITE = re.compile(r"^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)", re.IGNORECASE)


@dataclass
class RowCounter:
    """Rows written per table (INSERT/UPDATE/DELETE rowcounts) through an engine."""

    tables: dict[str, int] = field(default_factory=dict)

    @property
    def written(self) -> int:
        return sum(self.tables.values())

    def of(self, *tables: str) -> int:
        return sum(self.tables.get(t, 0) for t in tables)

    def _after(self, _conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        found = _WRITE.match(statement)
        if found:
            table = found.group(2).lower()
            self.tables[table] = self.tables.get(table, 0) + max(cursor.rowcount or 0, 0)

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


def quiet() -> None:
    """Warnings and errors only, on standard error: figures go to standard output."""
    from mentorpulse import logs

    logs.configure(level="warning", stream=sys.stderr)


def figure_main(
    measure: Callable[[str, str], dict[str, Any]], *, prog: str, doc: str | None
) -> None:
    """The command line of a figure module: ``--scale`` and ``--backend``, JSON out."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--scale", choices=("small", "medium", "large"), default="small")
    parser.add_argument("--backend", choices=BACKENDS, default="sqlite")
    args = parser.parse_args()
    quiet()
    try:
        print(json.dumps(measure(args.scale, args.backend), indent=2))
    finally:
        forget_run([args.scale])
