"""The schema, as numbered migrations both backends apply in order.

Each migration is a list of statements written once, with `{id}` (an auto-increment primary key),
`{real}` (a float), `{bigint}` and `{order_key}` filled in per dialect; `STORAGE_TABLES` lists what `db copy`
moves, parents first.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    id: str
    autoid: str  # ids never reused, even after prune deletes the newest rows
    real: str
    bigint: str
    seq: str
    order_key: str  # ends an index key on runs with their creation order, for ties in time


SQLITE = Dialect(
    id="INTEGER PRIMARY KEY",
    autoid="INTEGER PRIMARY KEY AUTOINCREMENT",
    real="REAL",
    bigint="INTEGER",
    seq="INTEGER",  # unused: SQLite orders runs by rowid
    order_key="",  # every SQLite index already ends with the rowid
)
POSTGRES = Dialect(
    id="BIGSERIAL PRIMARY KEY",
    autoid="BIGSERIAL PRIMARY KEY",
    real="DOUBLE PRECISION",
    bigint="BIGINT",
    seq="BIGSERIAL",
    order_key=", seq",
)

M001_INITIAL = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    job_name TEXT NOT NULL,
    location TEXT NOT NULL,
    status TEXT NOT NULL,
    run_config TEXT NOT NULL,
    tags TEXT NOT NULL,
    created_at {real} NOT NULL,
    start_time {real},
    end_time {real},
    parent_run_id TEXT,
    root_run_id TEXT,
    worker_pid {bigint},
    origin TEXT
);
-- "runs of job J, newest first" and the unfiltered listing are index scans.
CREATE INDEX runs_by_job ON runs (job_name, created_at DESC);
CREATE INDEX runs_by_created ON runs (created_at DESC);
CREATE INDEX runs_by_status ON runs (status, created_at);

-- The id is the one global order every sensor's cursor points into. job_name and location are
-- copied from the run so a sensor's scan never joins to filter.
CREATE TABLE events (
    id {autoid},
    run_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    timestamp {real} NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    step_key TEXT,
    level TEXT,
    error TEXT,
    job_name TEXT NOT NULL,
    location TEXT NOT NULL
);
CREATE INDEX events_by_run ON events (run_id, id);
-- "status events of type T after id N" is a range scan on this index.
CREATE INDEX events_by_type ON events (event_type, id);

CREATE TABLE sensors (
    id {id},
    location TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    cursor {bigint} NOT NULL DEFAULT 0,
    started_at {real},
    last_tick_at {real},
    lease_pid {bigint},
    lease_token TEXT,
    lease_expires {real},
    UNIQUE (location, name)
);

CREATE TABLE ticks (
    id {id},
    sensor_id {bigint} NOT NULL REFERENCES sensors (id),
    status TEXT NOT NULL,
    started_at {real} NOT NULL,
    duration_s {real} NOT NULL DEFAULT 0,
    events_scanned {bigint} NOT NULL DEFAULT 0,
    reactions {bigint} NOT NULL DEFAULT 0,
    run_ids TEXT NOT NULL DEFAULT '[]',
    skip_reasons TEXT NOT NULL DEFAULT '[]',
    errors TEXT NOT NULL DEFAULT '[]',
    cursor_before {bigint} NOT NULL,
    cursor_after {bigint} NOT NULL
);
CREATE INDEX ticks_by_sensor ON ticks (sensor_id, id DESC);

-- One row per (sensor, status event): the UNIQUE constraint is the exactly-once guard.
CREATE TABLE reactions (
    id {id},
    sensor_id {bigint} NOT NULL REFERENCES sensors (id),
    event_id {bigint} NOT NULL,
    run_id TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts {bigint} NOT NULL,
    next_attempt_at {real},
    error TEXT,
    skip_message TEXT,
    run_ids TEXT NOT NULL DEFAULT '[]',
    created_at {real} NOT NULL,
    finished_at {real},
    UNIQUE (sensor_id, event_id)
);
CREATE INDEX reactions_pending ON reactions (sensor_id, state, next_attempt_at);

-- A run_key a sensor has used, and the run it created.
CREATE TABLE run_keys (
    sensor_id {bigint} NOT NULL REFERENCES sensors (id),
    run_key TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (sensor_id, run_key)
)
"""

M002_SEVERAL_HOSTS = """
-- Who claimed a run (a launcher's ProcessId) with which token, who executes it, and when its
-- worker last said it lives (database clock).
ALTER TABLE runs ADD COLUMN launcher TEXT;
ALTER TABLE runs ADD COLUMN claim_token TEXT;
ALTER TABLE runs ADD COLUMN worker TEXT;
ALTER TABLE runs ADD COLUMN heartbeat_at {real};
-- The tick lease's holder as a ProcessId (pid alone is not unique across hosts or time).
ALTER TABLE sensors ADD COLUMN lease_holder TEXT;
-- NULL: the status follows the code's default_status; 'user': pinned by sensor start/stop.
ALTER TABLE sensors ADD COLUMN status_source TEXT;
ALTER TABLE ticks ADD COLUMN logs TEXT NOT NULL DEFAULT '[]';
-- The order runs were created in, for PostgreSQL (SQLite has its rowid).
ALTER TABLE runs ADD COLUMN seq {seq};
-- "did my alert go out for this run?" and "what did sensors request from it?" (runs show).
CREATE INDEX reactions_by_run ON reactions (run_id);
CREATE INDEX runs_by_parent ON runs (parent_run_id);
CREATE TABLE daemons (
    identity TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    pid {bigint} NOT NULL,
    started_at {real} NOT NULL,
    heartbeat_at {real} NOT NULL,
    info TEXT NOT NULL DEFAULT '{{}}'
)
"""

M003_OPERATIONS = """
-- prune: "finished runs that ended before T", "ticks started before T" and "reactions created
-- before T" are range scans, so an hourly prune stays cheap at any history size.
CREATE INDEX runs_by_end ON runs (end_time);
CREATE INDEX ticks_by_started ON ticks (started_at);
CREATE INDEX reactions_by_created ON reactions (created_at)
"""

# Issue 11. Only new tables and indexes, all IF NOT EXISTS, touching no table another migration
# alters: it commutes with M003_OPERATIONS (the operations branch), so whichever number each gets
# at merge, applying them in either order gives the same schema. (Third here; renumbered at merge.)
M004_ALERTS = """
-- One row per outage of a (location, job): opened by a final failure, resolved by a success.
CREATE TABLE IF NOT EXISTS incidents (
    id {autoid},
    location TEXT NOT NULL,
    job_name TEXT NOT NULL,
    status TEXT NOT NULL,
    failure_count {bigint} NOT NULL,
    opened_at {real} NOT NULL,
    resolved_at {real},
    first_run_id TEXT NOT NULL,
    last_run_id TEXT NOT NULL,
    resolved_by_run_id TEXT
);
-- At most one open incident per job, whatever the writers do.
CREATE UNIQUE INDEX IF NOT EXISTS incidents_one_open ON incidents (location, job_name)
    WHERE status = 'OPEN';
CREATE INDEX IF NOT EXISTS incidents_by_opened ON incidents (opened_at DESC);
-- The incident as of a run's status event (what `context.incident` shows), written with it.
CREATE TABLE IF NOT EXISTS incident_events (
    id {id},
    event_id {bigint} NOT NULL UNIQUE,
    run_id TEXT NOT NULL,
    incident_id {bigint} NOT NULL REFERENCES incidents (id),
    snapshot TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incident_events_by_run ON incident_events (run_id, event_id);
CREATE INDEX IF NOT EXISTS incident_events_by_incident ON incident_events (incident_id);
-- A sensor's small durable state (a Slack thread per incident, say), written with its pages.
CREATE TABLE IF NOT EXISTS sensor_values (
    id {id},
    sensor_id {bigint} NOT NULL REFERENCES sensors (id),
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at {real} NOT NULL,
    UNIQUE (sensor_id, key)
);
-- One RUN_OVERDUE per (run, phase): the UNIQUE constraint is the exactly-once guard.
CREATE TABLE IF NOT EXISTS run_overdue (
    id {id},
    run_id TEXT NOT NULL,
    phase TEXT NOT NULL,
    event_id {bigint} NOT NULL,
    overdue_seconds {real} NOT NULL,
    limit_seconds {real} NOT NULL,
    UNIQUE (run_id, phase)
);
CREATE INDEX IF NOT EXISTS run_overdue_by_event ON run_overdue (event_id)
"""

# Issue 9: a tick row keeps counts and the first few ids and notes (SPEC §8 round 2: ≤ 64 KB), so
# what it requested, skipped and failed is counted here. Touches only `ticks`: it commutes with
# other branches' migrations (renumbered at merge).
M005_TICK_COUNTS = """
ALTER TABLE ticks ADD COLUMN runs_requested {bigint} NOT NULL DEFAULT 0;
ALTER TABLE ticks ADD COLUMN skipped {bigint} NOT NULL DEFAULT 0;
ALTER TABLE ticks ADD COLUMN failures {bigint} NOT NULL DEFAULT 0
"""

# Issue 9. One new index, IF NOT EXISTS, on no table another branch alters: it commutes with
# other branches' migrations, whichever number it gets at merge.
M006_LISTINGS = """
-- `runs list --job J --status S`, newest first: one range of this index whatever J and S are.
-- With runs_by_job or runs_by_status alone, a rare pair (a job's few SUCCESS runs, or none) read
-- every run of the common half: 0.6 s at 10^6 runs. The key ends with the creation order
-- (`ORDER BY created_at DESC, rowid/seq DESC`), so no sort is needed.
CREATE INDEX IF NOT EXISTS runs_by_job_status ON runs (job_name, status, created_at{order_key})
"""

# Issue 9: every index a tick writes to grows at its end. `events_by_run` and `reactions_by_run` were
# keyed by run ids (random uuid4s), so a page of 1,000 reactions dirtied ~1,400 index pages spread
# over the whole history (each written to the WAL, then checkpointed): a tick's cost per reaction
# grew with the history. Events now carry their run's creation time, which leads the run index, so
# a backlog's write-backs and a new run's first event land beside their neighbours'; a run's
# reactions are found through its events; requested runs are indexed by their parent's creation
# time the same way (`runs_by_parent` was keyed by the parent's id).
M007_APPEND_INDEXES = """
ALTER TABLE events ADD COLUMN run_created_at {real};
UPDATE events SET run_created_at = (SELECT created_at FROM runs WHERE runs.run_id = events.run_id);
DROP INDEX events_by_run;
CREATE INDEX events_by_run ON events (run_created_at, run_id, id);
DROP INDEX reactions_by_run;
CREATE INDEX reactions_by_event ON reactions (event_id);
ALTER TABLE runs ADD COLUMN parent_created_at {real};
UPDATE runs SET parent_created_at = (SELECT p.created_at FROM runs p WHERE p.run_id = runs.parent_run_id)
    WHERE parent_run_id IS NOT NULL;
DROP INDEX runs_by_parent;
CREATE INDEX runs_by_parent ON runs (parent_created_at, parent_run_id)
"""

# Issue 9: the daemon's overdue check read every unfinished run on every pass (10^4 queued runs:
# 10^4 rows a pass). Only runs whose tags set a time limit can become overdue; a partial index
# holds just those, so the check reads them and nothing else (the predicate is `rows.LIMITED`).
# And the claim of the oldest queued runs sorted every queued run (PostgreSQL breaks ties in time
# by `seq`, which `runs_by_status` lacked), holding the write lock meanwhile: now an index walk.
M008_QUEUE_INDEXES = """
CREATE INDEX runs_with_limits ON runs (status, created_at{order_key})
    WHERE tags LIKE '%/max_%time"%';
DROP INDEX runs_by_status;
CREATE INDEX runs_by_status ON runs (status, created_at{order_key})
"""

MIGRATIONS: list[str] = [
    M001_INITIAL,
    M002_SEVERAL_HOSTS,
    M003_OPERATIONS,
    M004_ALERTS,
    M005_TICK_COUNTS,
    M006_LISTINGS,
    M007_APPEND_INDEXES,
    M008_QUEUE_INDEXES,
]
SCHEMA_VERSION = len(MIGRATIONS)

# Parents before children, for `db copy`.
STORAGE_TABLES = [
    "runs",
    "events",
    "sensors",
    "ticks",
    "reactions",
    "run_keys",
    "incidents",
    "incident_events",
    "sensor_values",
    "run_overdue",
]


def statements(migration: str, dialect: Dialect) -> list[str]:
    text = migration.format(
        id=dialect.id,
        autoid=dialect.autoid,
        real=dialect.real,
        bigint=dialect.bigint,
        seq=dialect.seq,
        order_key=dialect.order_key,
    )
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
