-- One row per group: the last snapshot the pipeline saw, which the next fetch is diffed against.
-- Kept column for column like migrations/postgres/0001_group_snapshots.sql.
CREATE TABLE group_snapshots (
    provider       TEXT    NOT NULL,
    tenant         TEXT    NOT NULL,
    chat_id        TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    owner          TEXT    NOT NULL,
    notice         TEXT    NOT NULL,
    create_time    INTEGER NOT NULL,
    -- NULL when the provider did not report one.
    member_version TEXT,
    dismissed      BOOLEAN NOT NULL,
    -- JSON array of userids.
    admins         TEXT    NOT NULL,
    -- JSON array of members, each serialised exactly as model::Member.
    members        TEXT    NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (provider, tenant, chat_id)
);
