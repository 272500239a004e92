-- cellpipe metadata schema v3: indexes for bounded lineage queries (artifact_lineage).
--
-- Portable SQL only (SQLite and PostgreSQL), like 0001 and 0002. No table changes: an
-- upgraded database reads exactly as before, only faster.

-- "Which step runs produced or read this artifact, newest run id first": the step run is in
-- the index, so the first N readers of an artifact that thousands of runs read come straight
-- from it, in order, without visiting the rest (events_by_digest had to fetch every event
-- row, then sort). It replaces events_by_digest, whose columns are its prefix.
CREATE INDEX events_by_artifact ON events (digest, kind, run_id, step);
DROP INDEX events_by_digest;

-- The same for the step runs that read an artifact through cellpipe.data(url).
CREATE INDEX data_inputs_by_artifact ON data_inputs (digest, run_id, step);
DROP INDEX data_inputs_by_digest;

-- Whether the step run behind an event computed its outputs or was a cache hit, answered
-- from the index alone (the step_runs rows are wide: cache fields, reasons, errors).
CREATE INDEX step_runs_by_status ON step_runs (run_id, step, status);
