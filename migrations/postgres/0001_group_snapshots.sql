-- One row per group: the last snapshot the pipeline saw, which the next fetch is diffed against.
-- Kept column for column like migrations/sqlite/0001_group_snapshots.sql.
CREATE TABLE group_snapshots (
    -- COLLATE "C" orders the key by bytes, as SQLite does, so `chat_ids` sorts the same on both
    -- backends whatever the database's locale.
    provider       TEXT COLLATE "C" NOT NULL,
    tenant         TEXT COLLATE "C" NOT NULL,
    chat_id        TEXT COLLATE "C" NOT NULL,
    name           TEXT    NOT NULL,
    owner          TEXT    NOT NULL,
    notice         TEXT    NOT NULL,
    create_time    BIGINT  NOT NULL,
    -- NULL when the provider did not report one.
    member_version TEXT,
    dismissed      BOOLEAN NOT NULL,
    -- JSON array of userids. Plain TEXT rather than JSONB: JSONB would reorder keys and drop
    -- duplicates, and nothing queries inside it.
    admins         TEXT    NOT NULL,
    -- JSON array of members, each serialised exactly as model::Member.
    members        TEXT    NOT NULL,
    updated_at_ms  BIGINT  NOT NULL,
    PRIMARY KEY (provider, tenant, chat_id)
);
