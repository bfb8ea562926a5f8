-- The read API: who is in which group now, and the history's age.
-- Kept column for column like migrations/sqlite/0003_read_api.sql.

-- The reverse index: one row per member of every stored group that is not dismissed, written by
-- the same transaction as the snapshot (store::commit), so it never disagrees with it.
CREATE TABLE group_members (
    provider  TEXT COLLATE "C" NOT NULL,
    tenant    TEXT COLLATE "C" NOT NULL,
    userid    TEXT COLLATE "C" NOT NULL,
    chat_id   TEXT COLLATE "C" NOT NULL,
    -- NULL when the provider did not report one.
    join_time BIGINT,
    PRIMARY KEY (provider, tenant, userid, chat_id)
);

-- Snapshots stored before this migration.
INSERT INTO group_members (provider, tenant, userid, chat_id, join_time)
SELECT s.provider, s.tenant, m->>'userid', s.chat_id, (m->>'join_time')::BIGINT
FROM group_snapshots s, jsonb_array_elements(s.members::jsonb) m
WHERE NOT s.dismissed
ON CONFLICT DO NOTHING;

-- Retention (store.history_days) deletes the oldest events first, a small batch at a time.
CREATE INDEX group_events_age ON group_events (created_at_ms);
