-- Several instances on one store: who is alive (and so who owns which inbound shard), leases for
-- work that must run once (periodic resync), and the vendors' access tokens and rate-limit
-- pauses, shared so that the instances spend one budget.
CREATE TABLE instances (
    instance_id     TEXT NOT NULL PRIMARY KEY,
    started_at_ms   INTEGER NOT NULL,
    heartbeat_at_ms INTEGER NOT NULL,
    -- Whether it runs a worker (only workers own shards).
    worker          BOOLEAN NOT NULL,
    -- JSON: host, pid, owned shards, API calls per account in the last minute.
    info            TEXT NOT NULL
);
CREATE TABLE leases (
    name     TEXT NOT NULL PRIMARY KEY,
    holder   TEXT NOT NULL,
    until_ms INTEGER NOT NULL
);
-- Access tokens are short-lived (WeCom and DingTalk: 2 h) and shared by every instance.
CREATE TABLE api_tokens (
    account       TEXT NOT NULL PRIMARY KEY,
    token         TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE TABLE api_pauses (
    account  TEXT NOT NULL PRIMARY KEY,
    until_ms INTEGER NOT NULL
);
