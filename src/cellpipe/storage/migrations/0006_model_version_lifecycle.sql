-- cellpipe metadata schema v6: archived and deleted model versions, tags, the packages a
-- version needs and its input example (issue 13).
--
-- Portable SQL only (SQLite and PostgreSQL), like 0001-0005. Existing versions get the
-- defaults: no tags, not archived, not deleted, no packages recorded, no input example.
--
-- archived_at: when the version was archived (NULL: it is not). Archived versions are skipped
--   when NAME or NAME@latest is resolved and cannot get an alias; NAME:N still reads them.
-- deleted_at: when the version was deleted (NULL: it is not). A deleted version's row stays as
--   a tombstone so its number is never given again (the next number is still MAX(version) + 1)
--   and the alias history that names it still reads; every query but those two skips it.
-- tags_json: key -> value (TEXT), edited under the model's row lock like the aliases.
-- packages_json: distribution -> version the object needs, recorded at registration.
-- input_example_json: a small Open Inference Protocol "inputs" list, or NULL.
ALTER TABLE model_versions ADD COLUMN tags_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE model_versions ADD COLUMN archived_at TEXT;
ALTER TABLE model_versions ADD COLUMN deleted_at TEXT;
ALTER TABLE model_versions ADD COLUMN packages_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE model_versions ADD COLUMN input_example_json TEXT;
