-- cellpipe metadata schema v2: workspace snapshots and external data inputs (issue 5).
--
-- Portable SQL only (SQLite and PostgreSQL), like 0001. Rows reference their run only, not
-- the step run: record_step_run replaces a step run's row, which must not cascade to these.

-- One row per snapshot: the run start (step '', kind 'start') and before/after each step
-- that ran. The manifest (files, environment, input/output values) is an artifact.
CREATE TABLE snapshots (
    run_id           TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    step             TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('start', 'before', 'after')),
    manifest_digest  TEXT NOT NULL,
    file_count       INTEGER NOT NULL,
    total_size       BIGINT NOT NULL,
    created_at       TEXT NOT NULL,
    PRIMARY KEY (run_id, step, kind)
);

-- External files a step read through cellpipe.data(url): the source, its version (ETag, or
-- size and modification time) and the digest of the bytes kept in the artifact store.
CREATE TABLE data_inputs (
    run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    step        TEXT NOT NULL,
    url         TEXT NOT NULL,
    version     TEXT NOT NULL,
    digest      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    fetched_at  TEXT NOT NULL,
    PRIMARY KEY (run_id, step, url)
);
-- Lineage: which step runs read these bytes; the latest version seen of a source.
CREATE INDEX data_inputs_by_digest ON data_inputs (digest);
CREATE INDEX data_inputs_by_url ON data_inputs (url, fetched_at);
