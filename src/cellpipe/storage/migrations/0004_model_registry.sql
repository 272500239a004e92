-- cellpipe metadata schema v4: the model registry (models, versions, aliases and their moves).
--
-- Portable SQL only (SQLite and PostgreSQL), like 0001-0003. Natural keys; times are TEXT in
-- the fixed UTC format; JSON values are TEXT. A version is immutable once inserted; aliases
-- are the only mutable part, and every move of one is appended to model_alias_moves.

-- One row per model name, created with its first version.
CREATE TABLE models (
    name         TEXT NOT NULL PRIMARY KEY,
    created_at   TEXT NOT NULL,
    description  TEXT NOT NULL
);

-- Version numbers are 1, 2, ... per name: the next one is MAX(version) + 1, taken while the
-- models row is locked (SQLite: BEGIN IMMEDIATE; PostgreSQL: SELECT ... FOR UPDATE); the
-- primary key refuses a duplicate if that discipline were ever broken. The stored object is an
-- artifact like any step output (digest -> artifacts). run_id, step and variable are the
-- lineage (NULL for a model registered outside a run); they do not reference runs, so a
-- version outlives the run records it came from.
CREATE TABLE model_versions (
    name                TEXT NOT NULL REFERENCES models (name),
    version             INTEGER NOT NULL,
    digest              TEXT NOT NULL REFERENCES artifacts (digest),
    serializer          TEXT NOT NULL,
    serializer_version  INTEGER NOT NULL,
    size                BIGINT NOT NULL,
    type_name           TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    run_id              TEXT,
    step                TEXT,
    variable            TEXT,
    parameters_json     TEXT NOT NULL,
    metrics_json        TEXT NOT NULL,
    signature_json      TEXT,
    description         TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
-- "Which versions came from this run" and "which versions hold these bytes".
CREATE INDEX model_versions_by_run ON model_versions (run_id, step);
CREATE INDEX model_versions_by_digest ON model_versions (digest);

-- The current aliases: (name, alias) -> version.
CREATE TABLE model_aliases (
    name      TEXT NOT NULL REFERENCES models (name),
    alias     TEXT NOT NULL,
    version   INTEGER NOT NULL,
    moved_at  TEXT NOT NULL,
    PRIMARY KEY (name, alias),
    FOREIGN KEY (name, version) REFERENCES model_versions (name, version)
);

-- Every move of an alias, in order (seq 1, 2, ... per model): version NULL means the alias
-- was removed, previous NULL that it did not exist before. Append-only.
CREATE TABLE model_alias_moves (
    name      TEXT NOT NULL REFERENCES models (name),
    seq       INTEGER NOT NULL,
    alias     TEXT NOT NULL,
    version   INTEGER,
    previous  INTEGER,
    moved_at  TEXT NOT NULL,
    PRIMARY KEY (name, seq)
);
