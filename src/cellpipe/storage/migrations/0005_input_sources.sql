-- cellpipe metadata schema v5: which step output each input came from (issue 9, lineage).
--
-- Portable SQL only (SQLite and PostgreSQL), like 0001-0004. Content addressing gives two
-- outputs with equal values (`a = 0` in one step, `b = 0` in another) one artifact, so the
-- digest alone cannot say which step produced the value a step read. An input event now
-- names the step of the same run whose output it is; the producing step run is that step
-- run, or, when it was a cache hit, the same step in its source run. NULL: unknown (rows
-- written before v5, or an input without a producer step); lineage then falls back to every
-- step run that produced the digest.
ALTER TABLE events ADD COLUMN source_step TEXT;
