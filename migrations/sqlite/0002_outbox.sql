-- The transactional outbox: every event is stored with the snapshot it produces, in one
-- transaction, before it is published; rows stay after publishing as the chat's history.
ALTER TABLE group_snapshots ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;
-- Bumped by every save; a save is conditional on the revision it loaded (one writer per chat).
ALTER TABLE group_snapshots ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
-- JSON array of {fingerprint, at_ms}: memberships the chat recently left behind.
ALTER TABLE group_snapshots ADD COLUMN replaced TEXT NOT NULL DEFAULT '[]';
ALTER TABLE group_snapshots ADD COLUMN checked_at_ms INTEGER NOT NULL DEFAULT 0;

CREATE TABLE group_events (
    provider        TEXT    NOT NULL,
    tenant          TEXT    NOT NULL,
    chat_id         TEXT    NOT NULL,
    -- 1, 2, 3, ... per chat, no gap.
    seq             INTEGER NOT NULL,
    id              TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    routing_key     TEXT    NOT NULL,
    -- The JSON body, byte for byte as published.
    body            TEXT    NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    -- NULL until the broker confirmed it.
    published_at_ms INTEGER,
    PRIMARY KEY (provider, tenant, chat_id, seq)
);
CREATE INDEX group_events_unpublished ON group_events (created_at_ms) WHERE published_at_ms IS NULL;

-- Inbound items whose changes are stored, written in the same transaction: an item redelivered
-- after a crash is acknowledged, not applied a second time. Pruned after a week.
CREATE TABLE applied_items (
    provider      TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    chat_id       TEXT NOT NULL,
    item_id       TEXT NOT NULL,
    applied_at_ms INTEGER NOT NULL,
    PRIMARY KEY (provider, tenant, chat_id, item_id)
);
CREATE INDEX applied_items_age ON applied_items (applied_at_ms);
