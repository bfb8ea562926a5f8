//! The store: per group, the last snapshot the pipeline believed, and the chat's events (the
//! transactional outbox, kept afterwards as its history).
//!
//! A chat's new snapshot and the events that lead to it are written in one transaction, before
//! anything is published; the publisher then sends the stored rows and marks them. Saves are
//! conditional on the revision that was loaded, so two writers of one chat can never overwrite
//! each other: the loser gets [`StoreError::Conflict`] and starts again from what is stored.
//!
//! Two backends share one schema (`migrations/sqlite`, `migrations/postgres`) and one set of SQL
//! statements: SQLite, the embedded default for a single instance, and PostgreSQL for several
//! instances sharing state. The rest of the pipeline only sees `Arc<dyn SnapshotStore>`, obtained
//! from [`connect`].

pub mod coordination;
mod postgres;
mod sqlite;

use async_trait::async_trait;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crate::core::model::{GroupEvent, GroupKey, GroupSnapshot, Provider, StoredGroup};
use coordination::{Coordination, InstanceRow};

/// One event as stored and published: the body is serialised once, so what is published is
/// byte for byte what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub seq: i64,
    pub id: String,
    pub event_type: String,
    pub routing_key: String,
    pub body: String,
}

impl OutboxEvent {
    pub fn of(event: &GroupEvent) -> Self {
        Self {
            seq: event.seq,
            id: event.id.clone(),
            event_type: event.event_type.as_str().to_owned(),
            routing_key: event.routing_key(),
            body: serde_json::to_string(event).expect("events serialise"),
        }
    }
}

/// One event of a chat's history, for the read API: the body exactly as published.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HistoryEvent {
    pub seq: i64,
    pub id: String,
    pub body: String,
}

/// A stored snapshot for the read API, its JSON columns as stored: the members are served
/// without being parsed and written again.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SnapshotText {
    pub name: String,
    pub owner: String,
    pub notice: String,
    pub create_time: i64,
    pub member_version: Option<String>,
    pub dismissed: bool,
    /// JSON array of userids.
    pub admins: String,
    /// JSON array of members, each as the events' `member` object.
    pub members: String,
    pub updated_at_ms: i64,
    pub last_seq: i64,
}

/// A group one member is in now, from the members index.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MemberGroup {
    pub chat_id: String,
    /// The member's join time in this group (Unix seconds), when the provider reported one.
    pub join_time: Option<i64>,
    pub name: String,
    pub owner: String,
    pub last_seq: i64,
}

/// One stored group in a listing: the snapshot's head, without its members.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GroupHead {
    pub chat_id: String,
    pub name: String,
    pub owner: String,
    pub member_version: Option<String>,
    pub last_seq: i64,
    pub updated_at_ms: i64,
    pub dismissed: bool,
}

/// Where a chat's history stands, for `resync` to see its requests processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatProgress {
    pub chat_id: String,
    pub last_seq: i64,
    pub checked_at_ms: i64,
}

#[async_trait]
pub trait SnapshotStore: Coordination + Send + Sync {
    async fn load(&self, key: &GroupKey) -> Result<Option<StoredGroup>, StoreError>;
    /// In one transaction: saves `group`, appends `events` to the chat's outbox and records the
    /// inbound `items` whose changes they are, provided the chat is still at `group.revision`
    /// (0: not stored yet). Returns the new revision, or [`StoreError::Conflict`] when another
    /// writer saved first.
    async fn commit(
        &self,
        key: &GroupKey,
        group: &StoredGroup,
        events: &[OutboxEvent],
        items: &[String],
    ) -> Result<i64, StoreError>;
    /// Which of `items` have had their changes stored already (a redelivery after a crash).
    async fn applied(&self, key: &GroupKey, items: &[String]) -> Result<Vec<String>, StoreError>;
    /// Forgets applied items recorded before `before_ms`, at most `limit` of them.
    async fn prune_applied(&self, before_ms: i64, limit: i64) -> Result<u64, StoreError>;
    /// Records that `alias` names the chat `key` (DingTalk's `openConversationId`).
    async fn learn_alias(&self, key: &GroupKey, alias: &str) -> Result<(), StoreError>;
    /// The chat `alias` names, if an earlier notification taught it.
    async fn resolve_alias(&self, provider: Provider, tenant: &str, alias: &str) -> Result<Option<String>, StoreError>;
    /// The chat's events not yet confirmed by the broker, in `seq` order.
    async fn unpublished(&self, key: &GroupKey) -> Result<Vec<OutboxEvent>, StoreError>;
    /// Marks each chat's events up to its `through_seq` as published, all in one transaction.
    async fn mark_published(&self, marks: &[(GroupKey, i64)], at_ms: i64) -> Result<(), StoreError>;
    /// Chats with an event stored before `before_ms` and still unpublished (at most `limit`).
    async fn chats_with_unpublished(&self, before_ms: i64, limit: i64) -> Result<Vec<GroupKey>, StoreError>;
    /// chat ids stored for one provider+tenant (for reconciliation), sorted.
    async fn chat_ids(&self, provider: Provider, tenant: &str) -> Result<Vec<String>, StoreError>;
    /// Where each stored chat of one provider+tenant stands.
    async fn progress(&self, provider: Provider, tenant: &str) -> Result<Vec<ChatProgress>, StoreError>;
    /// Cheap reachability check for /readyz.
    async fn ping(&self) -> Result<(), StoreError>;
    /// The stored snapshot with its JSON columns unparsed; `None` when the chat is not stored.
    async fn snapshot_text(&self, key: &GroupKey) -> Result<Option<SnapshotText>, StoreError>;
    /// The chat's published events after `after_seq`, in `seq` order, at most `limit`; `None`
    /// when the chat is not stored.
    async fn history(
        &self,
        key: &GroupKey,
        after_seq: i64,
        limit: i64,
    ) -> Result<Option<Vec<HistoryEvent>>, StoreError>;
    /// The groups `userid` is in now (not dismissed), by chat id after `after_chat_id`, at most
    /// `limit`: the members index, kept by [`SnapshotStore::commit`].
    async fn member_groups(
        &self,
        provider: Provider,
        tenant: &str,
        userid: &str,
        after_chat_id: &str,
        limit: i64,
    ) -> Result<Vec<MemberGroup>, StoreError>;
    /// The stored groups of one provider+tenant by chat id after `after_chat_id`, at most `limit`.
    async fn groups(
        &self,
        provider: Provider,
        tenant: &str,
        after_chat_id: &str,
        limit: i64,
    ) -> Result<Vec<GroupHead>, StoreError>;
    /// Deletes published events stored before `before_ms`, at most `limit` of them (one short
    /// statement). Unpublished events and snapshots are never deleted.
    async fn prune_history(&self, before_ms: i64, limit: i64) -> Result<u64, StoreError>;
}

/// Every message is safe to log: none contains the store URL's password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: unsupported URL; expected sqlite://, postgres:// or postgresql://")]
    UnsupportedUrl,
    /// `target` is the URL without credentials or query; `reason` has had the password masked.
    #[error("store: cannot open {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("store: migrating the schema failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store: database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("store: the stored snapshot of {chat_id} is unreadable: {source}")]
    Corrupt { chat_id: String, source: serde_json::Error },
    /// Saving under a key whose chat id differs from the snapshot's would make `load` return a
    /// snapshot for another chat, so it is refused.
    #[error("store: key chat_id {key:?} differs from the snapshot's chat_id {snapshot:?}")]
    KeyMismatch { key: String, snapshot: String },
    /// Another writer saved the chat since it was loaded.
    #[error("store: {chat_id} was saved by another writer since it was loaded")]
    Conflict { chat_id: String },
}

impl StoreError {
    /// The store is unreachable or busy: retrying later helps, and no chat is to blame. Every
    /// other error is about the data of one chat (an unreadable row, a value the database
    /// refuses), so retrying it for ever would never help.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    // SQLite: BUSY, LOCKED and their extended codes. PostgreSQL: connection
                    // exceptions, shutdown, lack of resources, serialization failure, deadlock.
                    matches!(code.as_ref(), "5" | "6" | "261" | "262" | "517" | "40001" | "40P01")
                        || code.starts_with("08")
                        || code.starts_with("53")
                        || code.starts_with("57P")
                }),
                _ => false,
            },
            StoreError::Connect { .. } => true,
            _ => false,
        }
    }
}

/// Opens the store named by `url` (`sqlite://PATH`, `postgres://…` or `postgresql://…`) and brings
/// its schema up to date. `sqlite://groupwatch.db` is relative to the working directory;
/// `sqlite:///var/lib/groupwatch.db` is absolute. The SQLite file is created if missing.
pub async fn connect(url: &str) -> Result<Arc<dyn SnapshotStore>, StoreError> {
    let store: Arc<dyn SnapshotStore> = match Backend::of(url)? {
        Backend::Sqlite => Arc::new(Metered(sqlite::SqliteStore::connect(url).await?)),
        Backend::Postgres => Arc::new(Metered(postgres::PostgresStore::connect(url).await?)),
    };
    Ok(store)
}

/// A second, small pool on the same store for the read API: its queries never wait for a
/// connection the workers need, and never make the workers wait for one. Opened read-only on
/// SQLite; no migrations (open the store with [`connect`] first). Only the read methods are
/// meant to be called on it.
pub async fn connect_reader(url: &str) -> Result<Arc<dyn SnapshotStore>, StoreError> {
    let store: Arc<dyn SnapshotStore> = match Backend::of(url)? {
        Backend::Sqlite => Arc::new(Metered(sqlite::SqliteStore::connect_reader(url).await?)),
        Backend::Postgres => Arc::new(Metered(postgres::PostgresStore::connect_reader(url).await?)),
    };
    Ok(store)
}

/// Connections of the read API's pool ([`connect_reader`]).
const READER_CONNECTIONS: u32 = 3;

#[derive(Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn of(url: &str) -> Result<Self, StoreError> {
        // `sqlite:` rather than `sqlite://` so that sqlx's own forms such as `sqlite::memory:` work.
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }
}

impl StoreError {
    /// A failure to open `url`, with any password in it masked out of the message: driver errors
    /// are not promised to leave the URL out.
    fn connect(url: &str, reason: impl std::fmt::Display) -> Self {
        let mut reason = reason.to_string();
        for secret in passwords(url) {
            reason = reason.replace(&secret, "***");
        }
        StoreError::Connect { target: without_credentials(url), reason }
    }
}

/// The password of `url` as written, percent-decoded, and from a `?password=` parameter
/// (PostgreSQL accepts both places).
fn passwords(url: &str) -> Vec<String> {
    let Ok(parsed) = url::Url::parse(url) else { return Vec::new() };
    let mut found = Vec::new();
    if let Some(p) = parsed.password() {
        found.push(p.to_owned());
        found.push(percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned());
    }
    found.extend(parsed.query_pairs().filter(|(k, _)| k == "password").map(|(_, v)| v.into_owned()));
    found.retain(|p| !p.is_empty());
    found
}

/// `url` without user, password or query, for naming the target in an error.
fn without_credentials(url: &str) -> String {
    if url.starts_with("sqlite:") {
        // A file path, not a network address: nothing to hide, and `Url` would mangle a relative one.
        return url.split('?').next().unwrap_or_default().to_owned();
    }
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("");
            parsed.set_query(None);
            parsed.to_string()
        }
        // An unparsable URL could be anything, including a bare password: show only its scheme.
        Err(_) => format!("{}://…", url.split_once(':').map_or("?", |(scheme, _)| scheme)),
    }
}

/// One row of `group_snapshots` without its key, as both backends write and read it.
#[derive(Debug, sqlx::FromRow)]
struct GroupRow {
    name: String,
    owner: String,
    notice: String,
    create_time: i64,
    member_version: Option<String>,
    dismissed: bool,
    /// JSON array of userids.
    admins: String,
    /// JSON array of `Member`.
    members: String,
    updated_at_ms: i64,
    last_seq: i64,
    revision: i64,
    /// JSON array of `Replaced`.
    replaced: String,
    checked_at_ms: i64,
}

/// The statements both backends run. Placeholders are `$N`, which PostgreSQL and SQLite read
/// alike (sqlx binds SQLite's `$N` to the N-th argument, so one may appear twice).
mod sql {
    pub const LOAD: &str = "SELECT name, owner, notice, create_time, member_version, dismissed, admins, members, \
         updated_at_ms, last_seq, revision, replaced, checked_at_ms \
         FROM group_snapshots WHERE provider = $1 AND tenant = $2 AND chat_id = $3";
    pub const INSERT: &str = "INSERT INTO group_snapshots (provider, tenant, chat_id, name, owner, notice, \
             create_time, member_version, dismissed, admins, members, updated_at_ms, last_seq, revision, replaced, \
             checked_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (provider, tenant, chat_id) DO NOTHING";
    pub const UPDATE: &str = "UPDATE group_snapshots SET name = $4, owner = $5, notice = $6, create_time = $7, \
             member_version = $8, dismissed = $9, admins = $10, members = $11, updated_at_ms = $12, last_seq = $13, \
             revision = $14, replaced = $15, checked_at_ms = $16 \
         WHERE provider = $1 AND tenant = $2 AND chat_id = $3 AND revision = $17";
    pub const APPEND: &str = "INSERT INTO group_events (provider, tenant, chat_id, seq, id, event_type, \
             routing_key, body, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    pub const UNPUBLISHED: &str = "SELECT seq, id, event_type, routing_key, body FROM group_events \
         WHERE provider = $1 AND tenant = $2 AND chat_id = $3 AND published_at_ms IS NULL ORDER BY seq";
    pub const MARK: &str = "UPDATE group_events SET published_at_ms = $4 \
         WHERE provider = $1 AND tenant = $2 AND chat_id = $3 AND seq <= $5 AND published_at_ms IS NULL";
    pub const RECORD: &str = "INSERT INTO applied_items (provider, tenant, chat_id, item_id, applied_at_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
    /// Followed by `IN ($4, $5, ...)`, one placeholder per item.
    pub const APPLIED: &str =
        "SELECT item_id FROM applied_items WHERE provider = $1 AND tenant = $2 AND chat_id = $3 AND item_id";
    pub const PRUNE_APPLIED: &str = "DELETE FROM applied_items WHERE applied_at_ms < $1 AND item_id IN \
         (SELECT item_id FROM applied_items WHERE applied_at_ms < $1 LIMIT $2)";
    pub const LEARN_ALIAS: &str =
        "INSERT INTO chat_aliases (provider, tenant, alias, chat_id) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (provider, tenant, alias) DO UPDATE SET chat_id = excluded.chat_id";
    pub const RESOLVE_ALIAS: &str =
        "SELECT chat_id FROM chat_aliases WHERE provider = $1 AND tenant = $2 AND alias = $3";
    pub const STUCK: &str = "SELECT DISTINCT provider, tenant, chat_id FROM group_events \
         WHERE published_at_ms IS NULL AND created_at_ms < $1 LIMIT $2";
    pub const CHAT_IDS: &str =
        "SELECT chat_id FROM group_snapshots WHERE provider = $1 AND tenant = $2 ORDER BY chat_id";
    pub const PROGRESS: &str = "SELECT chat_id, last_seq, checked_at_ms FROM group_snapshots \
         WHERE provider = $1 AND tenant = $2 ORDER BY chat_id";
    /// The members the index holds for the chat before a commit changes them.
    pub const INDEXED: &str = "SELECT members, dismissed, revision FROM group_snapshots \
         WHERE provider = $1 AND tenant = $2 AND chat_id = $3";
    /// Followed by `IN ($4, $5, ...)`, one placeholder per userid.
    pub const UNINDEX: &str =
        "DELETE FROM group_members WHERE provider = $1 AND tenant = $2 AND chat_id = $3 AND userid";
    /// Followed by `VALUES (...), (...)` and [`REINDEX`].
    pub const INDEX: &str = "INSERT INTO group_members (provider, tenant, chat_id, userid, join_time)";
    pub const REINDEX: &str =
        "ON CONFLICT (provider, tenant, userid, chat_id) DO UPDATE SET join_time = excluded.join_time";
    pub const SNAPSHOT_TEXT: &str = "SELECT name, owner, notice, create_time, member_version, dismissed, admins, \
         members, updated_at_ms, last_seq FROM group_snapshots WHERE provider = $1 AND tenant = $2 AND chat_id = $3";
    /// One statement: a stored chat without such events gives one row of NULLs, an unknown chat
    /// none.
    pub const HISTORY: &str = "SELECT e.seq, e.id, e.body FROM group_snapshots s \
         LEFT JOIN group_events e ON e.provider = s.provider AND e.tenant = s.tenant AND e.chat_id = s.chat_id \
           AND e.seq > $4 AND e.published_at_ms IS NOT NULL \
         WHERE s.provider = $1 AND s.tenant = $2 AND s.chat_id = $3 \
         ORDER BY e.seq LIMIT $5";
    /// The member's page first, then its groups: written as a join, SQLite without statistics
    /// may walk the snapshots and probe the index for each.
    pub const MEMBER_GROUPS: &str = "SELECT m.chat_id, m.join_time, s.name, s.owner, s.last_seq \
         FROM (SELECT chat_id, join_time FROM group_members \
               WHERE provider = $1 AND tenant = $2 AND userid = $3 AND chat_id > $4 ORDER BY chat_id LIMIT $5) m \
         JOIN group_snapshots s ON s.provider = $1 AND s.tenant = $2 AND s.chat_id = m.chat_id \
         ORDER BY m.chat_id";
    pub const GROUPS: &str = "SELECT chat_id, name, owner, member_version, last_seq, updated_at_ms, dismissed \
         FROM group_snapshots WHERE provider = $1 AND tenant = $2 AND chat_id > $3 ORDER BY chat_id LIMIT $4";
    /// Oldest first, through `group_events_age`; one bounded statement per call, so retention
    /// never holds a long transaction.
    pub const PRUNE_HISTORY: &str = "DELETE FROM group_events WHERE (provider, tenant, chat_id, seq) IN \
         (SELECT provider, tenant, chat_id, seq FROM group_events \
          WHERE created_at_ms < $1 AND published_at_ms IS NOT NULL ORDER BY created_at_ms LIMIT $2)";
}

/// A member as the members index keeps it: userid and join time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
struct IndexEntry {
    userid: String,
    join_time: Option<i64>,
}

impl IndexEntry {
    /// The index entries of a snapshot's `members` column, reading only the two fields it needs.
    fn parse(members: &str) -> Result<Vec<IndexEntry>, serde_json::Error> {
        serde_json::from_str(members)
    }

    fn of(group: &StoredGroup) -> Vec<IndexEntry> {
        if group.dismissed {
            return Vec::new();
        }
        group.snapshot.members.iter().map(|m| IndexEntry { userid: m.userid.clone(), join_time: m.join_time }).collect()
    }
}

/// What a commit changes in the members index: the userids gone, and the entries new or with a
/// new join time.
fn index_changes<'a>(old: &'a [IndexEntry], new: &'a [IndexEntry]) -> (Vec<&'a str>, Vec<&'a IndexEntry>) {
    let before: std::collections::HashMap<&str, Option<i64>> =
        old.iter().map(|e| (e.userid.as_str(), e.join_time)).collect();
    let after: std::collections::HashSet<&str> = new.iter().map(|e| e.userid.as_str()).collect();
    let gone = old.iter().map(|e| e.userid.as_str()).filter(|u| !after.contains(u)).collect();
    let upserts = new.iter().filter(|e| before.get(e.userid.as_str()) != Some(&e.join_time)).collect();
    (gone, upserts)
}

/// Rows per multi-row statement on the members index (5 placeholders a row for inserts).
const INDEX_CHUNK: usize = 100;

impl GroupRow {
    fn encode(key: &GroupKey, group: &StoredGroup) -> Result<Self, StoreError> {
        let s = &group.snapshot;
        if s.chat_id != key.chat_id {
            return Err(StoreError::KeyMismatch { key: key.chat_id.clone(), snapshot: s.chat_id.clone() });
        }
        // serde_json fails only on maps with non-string keys or a failing custom `Serialize`;
        // these are vectors of strings and of derived structs, so it cannot fail here.
        const INFALLIBLE: &str = "admins, members and replaced always serialise to JSON";
        Ok(GroupRow {
            name: s.name.clone(),
            owner: s.owner.clone(),
            notice: s.notice.clone(),
            create_time: s.create_time,
            member_version: s.member_version.clone(),
            dismissed: group.dismissed,
            admins: serde_json::to_string(&s.admins).expect(INFALLIBLE),
            members: serde_json::to_string(&s.members).expect(INFALLIBLE),
            updated_at_ms: group.updated_at_ms,
            last_seq: group.last_seq,
            revision: group.revision,
            replaced: serde_json::to_string(&group.replaced).expect(INFALLIBLE),
            checked_at_ms: group.checked_at_ms,
        })
    }

    fn decode(self, key: &GroupKey) -> Result<StoredGroup, StoreError> {
        let corrupt = |source| StoreError::Corrupt { chat_id: key.chat_id.clone(), source };
        Ok(StoredGroup {
            snapshot: GroupSnapshot {
                chat_id: key.chat_id.clone(),
                name: self.name,
                owner: self.owner,
                notice: self.notice,
                create_time: self.create_time,
                admins: serde_json::from_str(&self.admins).map_err(corrupt)?,
                member_version: self.member_version,
                members: serde_json::from_str(&self.members).map_err(corrupt)?,
            },
            dismissed: self.dismissed,
            updated_at_ms: self.updated_at_ms,
            last_seq: self.last_seq,
            revision: self.revision,
            replaced: serde_json::from_str(&self.replaced).map_err(corrupt)?,
            checked_at_ms: self.checked_at_ms,
        })
    }
}

/// The rows of `group_events` the publisher needs.
#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    id: String,
    event_type: String,
    routing_key: String,
    body: String,
}

impl From<EventRow> for OutboxEvent {
    fn from(r: EventRow) -> Self {
        OutboxEvent { seq: r.seq, id: r.id, event_type: r.event_type, routing_key: r.routing_key, body: r.body }
    }
}

/// Implements [`SnapshotStore`] for a backend whose struct has a `pool: sqlx::Pool<$db>`: both
/// backends run the very same statements, so they are written once.
/// `$begin` opens a commit's transaction: SQLite's must take the write lock at once, since the
/// commit reads before it writes (a deferred transaction would fail with SQLITE_BUSY_SNAPSHOT
/// when another connection wrote in between, instead of waiting its turn).
macro_rules! sql_store {
    ($store:ty, $db:ty, $begin:expr) => {
        #[async_trait::async_trait]
        impl $crate::store::SnapshotStore for $store {
            async fn load(
                &self,
                key: &$crate::core::model::GroupKey,
            ) -> Result<Option<$crate::core::model::StoredGroup>, $crate::store::StoreError> {
                let row: Option<$crate::store::GroupRow> = sqlx::query_as($crate::store::sql::LOAD)
                    .bind(key.provider.as_str())
                    .bind(&key.tenant)
                    .bind(&key.chat_id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| r.decode(key)).transpose()
            }

            async fn commit(
                &self,
                key: &$crate::core::model::GroupKey,
                group: &$crate::core::model::StoredGroup,
                events: &[$crate::store::OutboxEvent],
                items: &[String],
            ) -> Result<i64, $crate::store::StoreError> {
                let row = $crate::store::GroupRow::encode(key, group)?;
                let expected = row.revision;
                let revision = expected + 1;
                let mut tx = self.pool.begin_with($begin).await?;
                // The members index moves from what the stored row says to what this commit
                // says, in the same transaction, so it can never disagree with the snapshot.
                let indexed = if expected == 0 {
                    Vec::new()
                } else {
                    let stored: Option<(String, bool, i64)> = sqlx::query_as($crate::store::sql::INDEXED)
                        .bind(key.provider.as_str())
                        .bind(&key.tenant)
                        .bind(&key.chat_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    match stored {
                        Some((members, false, revision)) if revision == expected => {
                            $crate::store::IndexEntry::parse(&members).map_err(|source| {
                                $crate::store::StoreError::Corrupt { chat_id: key.chat_id.clone(), source }
                            })?
                        }
                        Some((_, true, revision)) if revision == expected => Vec::new(),
                        _ => return Err($crate::store::StoreError::Conflict { chat_id: key.chat_id.clone() }),
                    }
                };
                let current = $crate::store::IndexEntry::of(group);
                let statement = if expected == 0 { $crate::store::sql::INSERT } else { $crate::store::sql::UPDATE };
                let mut query = sqlx::query::<$db>(statement)
                    .bind(key.provider.as_str())
                    .bind(&key.tenant)
                    .bind(&key.chat_id)
                    .bind(row.name)
                    .bind(row.owner)
                    .bind(row.notice)
                    .bind(row.create_time)
                    .bind(row.member_version)
                    .bind(row.dismissed)
                    .bind(row.admins)
                    .bind(row.members)
                    .bind(row.updated_at_ms)
                    .bind(row.last_seq)
                    .bind(revision)
                    .bind(row.replaced)
                    .bind(row.checked_at_ms);
                if expected != 0 {
                    query = query.bind(expected);
                }
                if query.execute(&mut *tx).await?.rows_affected() != 1 {
                    return Err($crate::store::StoreError::Conflict { chat_id: key.chat_id.clone() });
                }
                let now = $crate::core::clock::now_ms();
                for e in events {
                    sqlx::query::<$db>($crate::store::sql::APPEND)
                        .bind(key.provider.as_str())
                        .bind(&key.tenant)
                        .bind(&key.chat_id)
                        .bind(e.seq)
                        .bind(&e.id)
                        .bind(&e.event_type)
                        .bind(&e.routing_key)
                        .bind(&e.body)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                let (gone, upserts) = $crate::store::index_changes(&indexed, &current);
                for chunk in gone.chunks($crate::store::INDEX_CHUNK) {
                    let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 4)).collect();
                    let sql = format!("{} IN ({})", $crate::store::sql::UNINDEX, placeholders.join(", "));
                    let mut query =
                        sqlx::query::<$db>(&sql).bind(key.provider.as_str()).bind(&key.tenant).bind(&key.chat_id);
                    for userid in chunk {
                        query = query.bind(*userid);
                    }
                    query.execute(&mut *tx).await?;
                }
                for chunk in upserts.chunks($crate::store::INDEX_CHUNK) {
                    let rows: Vec<String> = (0..chunk.len())
                        .map(|i| {
                            let n = i * 5;
                            format!("(${}, ${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4, n + 5)
                        })
                        .collect();
                    let sql = format!(
                        "{} VALUES {} {}",
                        $crate::store::sql::INDEX,
                        rows.join(", "),
                        $crate::store::sql::REINDEX
                    );
                    let mut query = sqlx::query::<$db>(&sql);
                    for entry in chunk {
                        query = query
                            .bind(key.provider.as_str())
                            .bind(&key.tenant)
                            .bind(&key.chat_id)
                            .bind(&entry.userid)
                            .bind(entry.join_time);
                    }
                    query.execute(&mut *tx).await?;
                }
                for item in items {
                    sqlx::query::<$db>($crate::store::sql::RECORD)
                        .bind(key.provider.as_str())
                        .bind(&key.tenant)
                        .bind(&key.chat_id)
                        .bind(item)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(revision)
            }

            async fn applied(
                &self,
                key: &$crate::core::model::GroupKey,
                items: &[String],
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                let mut found = Vec::new();
                for chunk in items.chunks(200) {
                    let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 4)).collect();
                    let sql = format!("{} IN ({})", $crate::store::sql::APPLIED, placeholders.join(", "));
                    let mut query = sqlx::query_scalar::<$db, String>(&sql)
                        .bind(key.provider.as_str())
                        .bind(&key.tenant)
                        .bind(&key.chat_id);
                    for item in chunk {
                        query = query.bind(item);
                    }
                    found.extend(query.fetch_all(&self.pool).await?);
                }
                Ok(found)
            }

            async fn prune_applied(&self, before_ms: i64, limit: i64) -> Result<u64, $crate::store::StoreError> {
                let done = sqlx::query::<$db>($crate::store::sql::PRUNE_APPLIED)
                    .bind(before_ms)
                    .bind(limit)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn unpublished(
                &self,
                key: &$crate::core::model::GroupKey,
            ) -> Result<Vec<$crate::store::OutboxEvent>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::EventRow> = sqlx::query_as($crate::store::sql::UNPUBLISHED)
                    .bind(key.provider.as_str())
                    .bind(&key.tenant)
                    .bind(&key.chat_id)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn mark_published(
                &self,
                marks: &[($crate::core::model::GroupKey, i64)],
                at_ms: i64,
            ) -> Result<(), $crate::store::StoreError> {
                if marks.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin_with($begin).await?;
                for (key, through_seq) in marks {
                    sqlx::query::<$db>($crate::store::sql::MARK)
                        .bind(key.provider.as_str())
                        .bind(&key.tenant)
                        .bind(&key.chat_id)
                        .bind(at_ms)
                        .bind(through_seq)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn learn_alias(
                &self,
                key: &$crate::core::model::GroupKey,
                alias: &str,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query::<$db>($crate::store::sql::LEARN_ALIAS)
                    .bind(key.provider.as_str())
                    .bind(&key.tenant)
                    .bind(alias)
                    .bind(&key.chat_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn resolve_alias(
                &self,
                provider: $crate::core::model::Provider,
                tenant: &str,
                alias: &str,
            ) -> Result<Option<String>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar($crate::store::sql::RESOLVE_ALIAS)
                    .bind(provider.as_str())
                    .bind(tenant)
                    .bind(alias)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn chats_with_unpublished(
                &self,
                before_ms: i64,
                limit: i64,
            ) -> Result<Vec<$crate::core::model::GroupKey>, $crate::store::StoreError> {
                let rows: Vec<(String, String, String)> =
                    sqlx::query_as($crate::store::sql::STUCK).bind(before_ms).bind(limit).fetch_all(&self.pool).await?;
                Ok(rows
                    .into_iter()
                    .filter_map(|(provider, tenant, chat_id)| {
                        let provider = $crate::core::model::Provider::parse(&provider)?;
                        Some($crate::core::model::GroupKey::new(provider, tenant, chat_id))
                    })
                    .collect())
            }

            async fn chat_ids(
                &self,
                provider: $crate::core::model::Provider,
                tenant: &str,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                let ids = sqlx::query_scalar($crate::store::sql::CHAT_IDS)
                    .bind(provider.as_str())
                    .bind(tenant)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(ids)
            }

            async fn progress(
                &self,
                provider: $crate::core::model::Provider,
                tenant: &str,
            ) -> Result<Vec<$crate::store::ChatProgress>, $crate::store::StoreError> {
                let rows: Vec<(String, i64, i64)> = sqlx::query_as($crate::store::sql::PROGRESS)
                    .bind(provider.as_str())
                    .bind(tenant)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|(chat_id, last_seq, checked_at_ms)| $crate::store::ChatProgress {
                        chat_id,
                        last_seq,
                        checked_at_ms,
                    })
                    .collect())
            }

            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query::<$db>("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn history(
                &self,
                key: &$crate::core::model::GroupKey,
                after_seq: i64,
                limit: i64,
            ) -> Result<Option<Vec<$crate::store::HistoryEvent>>, $crate::store::StoreError> {
                let rows: Vec<(Option<i64>, Option<String>, Option<String>)> =
                    sqlx::query_as($crate::store::sql::HISTORY)
                        .bind(key.provider.as_str())
                        .bind(&key.tenant)
                        .bind(&key.chat_id)
                        .bind(after_seq)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?;
                if rows.is_empty() {
                    return Ok(None);
                }
                let events = rows
                    .into_iter()
                    .filter_map(|(seq, id, body)| Some($crate::store::HistoryEvent { seq: seq?, id: id?, body: body? }))
                    .collect();
                Ok(Some(events))
            }

            async fn snapshot_text(
                &self,
                key: &$crate::core::model::GroupKey,
            ) -> Result<Option<$crate::store::SnapshotText>, $crate::store::StoreError> {
                let row = sqlx::query_as($crate::store::sql::SNAPSHOT_TEXT)
                    .bind(key.provider.as_str())
                    .bind(&key.tenant)
                    .bind(&key.chat_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row)
            }

            async fn member_groups(
                &self,
                provider: $crate::core::model::Provider,
                tenant: &str,
                userid: &str,
                after_chat_id: &str,
                limit: i64,
            ) -> Result<Vec<$crate::store::MemberGroup>, $crate::store::StoreError> {
                let rows = sqlx::query_as($crate::store::sql::MEMBER_GROUPS)
                    .bind(provider.as_str())
                    .bind(tenant)
                    .bind(userid)
                    .bind(after_chat_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows)
            }

            async fn groups(
                &self,
                provider: $crate::core::model::Provider,
                tenant: &str,
                after_chat_id: &str,
                limit: i64,
            ) -> Result<Vec<$crate::store::GroupHead>, $crate::store::StoreError> {
                let rows = sqlx::query_as($crate::store::sql::GROUPS)
                    .bind(provider.as_str())
                    .bind(tenant)
                    .bind(after_chat_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows)
            }

            async fn prune_history(&self, before_ms: i64, limit: i64) -> Result<u64, $crate::store::StoreError> {
                let done = sqlx::query::<$db>($crate::store::sql::PRUNE_HISTORY)
                    .bind(before_ms)
                    .bind(limit)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}
use sql_store;

/// Wraps a backend to time every operation, so the backends need not repeat it.
struct Metered<S>(S);

#[async_trait]
impl<S: SnapshotStore> Coordination for Metered<S> {
    async fn heartbeat(&self, instance: &InstanceRow) -> Result<(), StoreError> {
        timed("heartbeat", self.0.heartbeat(instance)).await
    }

    async fn leave(&self, instance_id: &str) -> Result<(), StoreError> {
        timed("leave", self.0.leave(instance_id)).await
    }

    async fn forget_instances(&self, before_ms: i64) -> Result<u64, StoreError> {
        timed("forget_instances", self.0.forget_instances(before_ms)).await
    }

    async fn instances(&self, since_ms: i64) -> Result<Vec<InstanceRow>, StoreError> {
        timed("instances", self.0.instances(since_ms)).await
    }

    async fn try_lease(&self, name: &str, holder: &str, until_ms: i64, now_ms: i64) -> Result<bool, StoreError> {
        timed("try_lease", self.0.try_lease(name, holder, until_ms, now_ms)).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        timed("release_lease", self.0.release_lease(name, holder)).await
    }

    async fn api_token(&self, account: &str) -> Result<Option<(String, i64)>, StoreError> {
        timed("api_token", self.0.api_token(account)).await
    }

    async fn put_api_token(&self, account: &str, token: &str, expires_at_ms: i64) -> Result<(), StoreError> {
        timed("put_api_token", self.0.put_api_token(account, token, expires_at_ms)).await
    }

    async fn api_token_expiries(&self) -> Result<Vec<(String, i64)>, StoreError> {
        timed("api_token_expiries", self.0.api_token_expiries()).await
    }

    async fn pause_api(&self, account: &str, until_ms: i64) -> Result<(), StoreError> {
        timed("pause_api", self.0.pause_api(account, until_ms)).await
    }

    async fn api_pauses(&self, now_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        timed("api_pauses", self.0.api_pauses(now_ms)).await
    }
}

#[async_trait]
impl<S: SnapshotStore> SnapshotStore for Metered<S> {
    async fn load(&self, key: &GroupKey) -> Result<Option<StoredGroup>, StoreError> {
        timed("load", self.0.load(key)).await
    }

    async fn commit(
        &self,
        key: &GroupKey,
        group: &StoredGroup,
        events: &[OutboxEvent],
        items: &[String],
    ) -> Result<i64, StoreError> {
        timed("commit", self.0.commit(key, group, events, items)).await
    }

    async fn applied(&self, key: &GroupKey, items: &[String]) -> Result<Vec<String>, StoreError> {
        timed("applied", self.0.applied(key, items)).await
    }

    async fn prune_applied(&self, before_ms: i64, limit: i64) -> Result<u64, StoreError> {
        timed("prune_applied", self.0.prune_applied(before_ms, limit)).await
    }

    async fn unpublished(&self, key: &GroupKey) -> Result<Vec<OutboxEvent>, StoreError> {
        timed("unpublished", self.0.unpublished(key)).await
    }

    async fn mark_published(&self, marks: &[(GroupKey, i64)], at_ms: i64) -> Result<(), StoreError> {
        timed("mark_published", self.0.mark_published(marks, at_ms)).await
    }

    async fn learn_alias(&self, key: &GroupKey, alias: &str) -> Result<(), StoreError> {
        timed("learn_alias", self.0.learn_alias(key, alias)).await
    }

    async fn resolve_alias(&self, provider: Provider, tenant: &str, alias: &str) -> Result<Option<String>, StoreError> {
        timed("resolve_alias", self.0.resolve_alias(provider, tenant, alias)).await
    }

    async fn chats_with_unpublished(&self, before_ms: i64, limit: i64) -> Result<Vec<GroupKey>, StoreError> {
        timed("chats_with_unpublished", self.0.chats_with_unpublished(before_ms, limit)).await
    }

    async fn chat_ids(&self, provider: Provider, tenant: &str) -> Result<Vec<String>, StoreError> {
        timed("chat_ids", self.0.chat_ids(provider, tenant)).await
    }

    async fn progress(&self, provider: Provider, tenant: &str) -> Result<Vec<ChatProgress>, StoreError> {
        timed("progress", self.0.progress(provider, tenant)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        timed("ping", self.0.ping()).await
    }

    async fn snapshot_text(&self, key: &GroupKey) -> Result<Option<SnapshotText>, StoreError> {
        timed("snapshot_text", self.0.snapshot_text(key)).await
    }

    async fn history(
        &self,
        key: &GroupKey,
        after_seq: i64,
        limit: i64,
    ) -> Result<Option<Vec<HistoryEvent>>, StoreError> {
        timed("history", self.0.history(key, after_seq, limit)).await
    }

    async fn member_groups(
        &self,
        provider: Provider,
        tenant: &str,
        userid: &str,
        after_chat_id: &str,
        limit: i64,
    ) -> Result<Vec<MemberGroup>, StoreError> {
        timed("member_groups", self.0.member_groups(provider, tenant, userid, after_chat_id, limit)).await
    }

    async fn groups(
        &self,
        provider: Provider,
        tenant: &str,
        after_chat_id: &str,
        limit: i64,
    ) -> Result<Vec<GroupHead>, StoreError> {
        timed("groups", self.0.groups(provider, tenant, after_chat_id, limit)).await
    }

    async fn prune_history(&self, before_ms: i64, limit: i64) -> Result<u64, StoreError> {
        timed("prune_history", self.0.prune_history(before_ms, limit)).await
    }
}

async fn timed<T>(op: &'static str, operation: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = operation.await;
    metrics::histogram!("groupwatch_store_seconds", "op" => op).record(started.elapsed());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_is_chosen_by_scheme() {
        assert_eq!(Backend::of("sqlite://groupwatch.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of("postgresql://u@h/db").unwrap(), Backend::Postgres);
        for bad in ["mysql://u:p@h/db", "groupwatch.db", "", "postgres:/x", "SQLITE://x"] {
            assert!(matches!(Backend::of(bad), Err(StoreError::UnsupportedUrl)), "{bad}");
        }
    }

    #[test]
    fn connect_errors_mask_the_password() {
        let url = "postgres://gw:p%40ss%2Fw0rd@db.example:5432/gw?password=q-secret&sslmode=require";
        let err = StoreError::connect(url, "auth failed for p%40ss%2Fw0rd / p@ss/w0rd / q-secret");
        let shown = err.to_string();
        assert!(!shown.contains("p@ss") && !shown.contains("p%40ss") && !shown.contains("q-secret"), "{shown}");
        assert!(shown.contains("postgres://db.example:5432/gw"), "{shown}");
        assert!(!format!("{err:?}").contains("w0rd"));
    }

    #[test]
    fn unparsable_url_shows_only_its_scheme() {
        let shown = StoreError::connect("postgres://u:hunter2@[bad/db", "invalid").to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://…"), "{shown}");
    }

    #[test]
    fn index_changes_follow_joins_leaves_and_rejoins() {
        let e = |u: &str, t: Option<i64>| IndexEntry { userid: u.into(), join_time: t };
        let old = [e("a", Some(1)), e("b", Some(2)), e("c", None)];
        let new = [e("a", Some(1)), e("c", Some(5)), e("d", Some(6))];
        let (gone, upserts) = index_changes(&old, &new);
        assert_eq!(gone, ["b"]);
        let up: Vec<&str> = upserts.iter().map(|e| e.userid.as_str()).collect();
        assert_eq!(up, ["c", "d"], "a new join time is written, an unchanged member is not");
        let (gone, upserts) = index_changes(&old, &[]);
        assert_eq!((gone.len(), upserts.len()), (3, 0), "a dismissal empties the chat's entries");
        let parsed =
            IndexEntry::parse(r#"[{"userid":"a","type":1,"join_time":1,"name":"x"},{"userid":"b","join_time":null}]"#)
                .unwrap();
        assert_eq!(parsed, [e("a", Some(1)), e("b", None)]);
    }

    #[test]
    fn unavailability_is_told_apart_from_bad_data() {
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(!StoreError::Conflict { chat_id: "c".into() }.is_unavailable());
        assert!(!StoreError::KeyMismatch { key: "a".into(), snapshot: "b".into() }.is_unavailable());
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_unavailable());
    }
}
