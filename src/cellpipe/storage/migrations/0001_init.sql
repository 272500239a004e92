-- cellpipe metadata schema v1: runs and their step runs, in the ML-Metadata vocabulary
-- (run = context, step run = execution, artifact, event = input/output edge).
--
-- Portable SQL only: this file runs unchanged on SQLite and PostgreSQL. Natural keys (no
-- autoincrement, whose syntax differs); times are TEXT in one fixed UTC format
-- (YYYY-MM-DDTHH:MM:SS.ffffffZ) so they sort as strings; JSON values are TEXT.
-- Statements are separated by a semicolon at the end of a line.

CREATE TABLE schema_version (
    version     INTEGER NOT NULL PRIMARY KEY,
    applied_at  TEXT NOT NULL
);

CREATE TABLE runs (
    run_id           TEXT NOT NULL PRIMARY KEY,
    pipeline         TEXT NOT NULL,
    notebook         TEXT NOT NULL,
    notebook_digest  TEXT NOT NULL,
    status           TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    finished_at      TEXT,
    error            TEXT,
    pid              INTEGER,
    hostname         TEXT,
    -- Copies of the parameters and metrics tables for this run, so listing runs is one query.
    parameters_json  TEXT NOT NULL,
    metrics_json     TEXT NOT NULL
);
-- `cellpipe runs` lists newest first, optionally by notebook or status.
CREATE INDEX runs_by_start ON runs (started_at, run_id);
CREATE INDEX runs_by_notebook ON runs (notebook, started_at);
CREATE INDEX runs_by_status ON runs (status, started_at);

-- One row per parameter value of a run (queryable: "runs where MAX_DEPTH = 6").
CREATE TABLE parameters (
    run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    value_json  TEXT NOT NULL,
    value_num   DOUBLE PRECISION,
    PRIMARY KEY (run_id, name)
);
CREATE INDEX parameters_by_name ON parameters (name, value_num);

CREATE TABLE step_runs (
    run_id           TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    step             TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    status           TEXT NOT NULL,
    cache_key        TEXT,
    cache_fields     TEXT NOT NULL,
    cache_reason     TEXT NOT NULL,
    source_run       TEXT,
    started_at       TEXT,
    finished_at      TEXT,
    log_digest       TEXT,
    notebook_digest  TEXT,
    error            TEXT,
    PRIMARY KEY (run_id, step)
);
-- find_cached(step, cache_key) and previous_step_run(step, ...).
CREATE INDEX step_runs_by_cache_key ON step_runs (step, cache_key, status, finished_at);
CREATE INDEX step_runs_by_step ON step_runs (step, run_id);

-- Run metrics have step = ''; step metrics name their step.
CREATE TABLE metrics (
    run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    step        TEXT NOT NULL,
    name        TEXT NOT NULL,
    value_json  TEXT NOT NULL,
    value_num   DOUBLE PRECISION,
    PRIMARY KEY (run_id, step, name)
);
CREATE INDEX metrics_by_name ON metrics (name, value_num);

-- The bytes: one row per digest. serializer and type_name are those of the first writer;
-- each event carries its own (the same bytes can be a numpy.ndarray or a numpy.memmap).
CREATE TABLE artifacts (
    digest              TEXT NOT NULL PRIMARY KEY,
    serializer          TEXT NOT NULL,
    serializer_version  INTEGER NOT NULL,
    size                BIGINT NOT NULL,
    type_name           TEXT NOT NULL,
    created_at          TEXT NOT NULL
);

-- Input/output edges between step runs and artifacts.
CREATE TABLE events (
    run_id              TEXT NOT NULL,
    step                TEXT NOT NULL,
    kind                TEXT NOT NULL CHECK (kind IN ('input', 'output')),
    variable            TEXT NOT NULL,
    digest              TEXT NOT NULL REFERENCES artifacts (digest),
    serializer          TEXT NOT NULL,
    serializer_version  INTEGER NOT NULL,
    type_name           TEXT NOT NULL,
    PRIMARY KEY (run_id, step, kind, variable),
    FOREIGN KEY (run_id, step) REFERENCES step_runs (run_id, step) ON DELETE CASCADE
);
-- Lineage: which step runs produced or read an artifact.
CREATE INDEX events_by_digest ON events (digest, kind);

-- Workspace files a step opened for reading, with their content digest at the time.
CREATE TABLE files_read (
    run_id  TEXT NOT NULL,
    step    TEXT NOT NULL,
    path    TEXT NOT NULL,
    digest  TEXT NOT NULL,
    PRIMARY KEY (run_id, step, path),
    FOREIGN KEY (run_id, step) REFERENCES step_runs (run_id, step) ON DELETE CASCADE
);

-- Append-only history of what happened to a run (never updated, never deleted by cellpipe).
CREATE TABLE run_events (
    run_id       TEXT NOT NULL,
    recorded_at  TEXT NOT NULL,
    event        TEXT NOT NULL,
    step         TEXT,
    status       TEXT,
    detail       TEXT
);
CREATE INDEX run_events_by_run ON run_events (run_id, recorded_at);
