-- The read API: who is in which group now, and the history's age.
-- Kept column for column like migrations/postgres/0003_read_api.sql.

-- The reverse index: one row per member of every stored group that is not dismissed, written by
-- the same transaction as the snapshot (store::commit), so it never disagrees with it.
CREATE TABLE group_members (
    provider  TEXT    NOT NULL,
    tenant    TEXT    NOT NULL,
    userid    TEXT    NOT NULL,
    chat_id   TEXT    NOT NULL,
    -- NULL when the provider did not report one.
    join_time INTEGER,
    PRIMARY KEY (provider, tenant, userid, chat_id)
);

-- Snapshots stored before this migration.
INSERT INTO group_members (provider, tenant, userid, chat_id, join_time)
SELECT s.provider, s.tenant, json_extract(m.value, '$.userid'), s.chat_id, json_extract(m.value, '$.join_time')
FROM group_snapshots s, json_each(s.members) m
WHERE NOT s.dismissed
ON CONFLICT DO NOTHING;

-- Retention (store.history_days) deletes the oldest events first, a small batch at a time.
CREATE INDEX group_events_age ON group_events (created_at_ms);

-- SQLite only. It keeps a row's columns in order, and `members` (tens of KB for a large group)
-- comes before `updated_at_ms` and `last_seq`: listing groups, or a member's groups, would read
-- every member list through its overflow pages. This index holds what those answers show, so
-- they never touch the rows. (PostgreSQL keeps large values out of line: its rows stay small.)
CREATE INDEX group_snapshots_heads
    ON group_snapshots (provider, tenant, chat_id, name, owner, member_version, last_seq, updated_at_ms, dismissed);
