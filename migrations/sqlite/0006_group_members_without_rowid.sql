-- SQLite only: the members index as a WITHOUT ROWID table (same columns, same key as
-- migrations/postgres/0003_read_api.sql). As a rowid table its primary key was a second B-tree:
-- a member's groups were found in the key and then each row was looked up again, one random
-- read per group, for `join_time`. Stored in key order, a member's rows sit on one or two
-- adjacent pages. Measured on 100,000 groups of 200 members (20 million rows), a member's 20
-- groups: 67-79 us instead of 315-419 us per query; the copy took 90 s.
CREATE TABLE group_members_by_key (
    provider  TEXT    NOT NULL,
    tenant    TEXT    NOT NULL,
    userid    TEXT    NOT NULL,
    chat_id   TEXT    NOT NULL,
    join_time INTEGER,
    PRIMARY KEY (provider, tenant, userid, chat_id)
) WITHOUT ROWID;

INSERT INTO group_members_by_key (provider, tenant, userid, chat_id, join_time)
SELECT provider, tenant, userid, chat_id, join_time FROM group_members;

DROP TABLE group_members;

ALTER TABLE group_members_by_key RENAME TO group_members;
