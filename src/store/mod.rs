//! The snapshot store: per group, the last snapshot the pipeline saw, so that the next fetch can be
//! diffed against it.
//!
//! Two backends share one schema (`migrations/sqlite`, `migrations/postgres`): SQLite, the
//! embedded default for a single instance, and PostgreSQL for several instances sharing state.
//! The rest of the pipeline only sees `Arc<dyn SnapshotStore>`, obtained from [`connect`].

mod postgres;
mod sqlite;

use async_trait::async_trait;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crate::core::model::{GroupKey, GroupSnapshot, Provider, StoredGroup};

#[async_trait]
pub trait SnapshotStore: Send + Sync {
    async fn load(&self, key: &GroupKey) -> Result<Option<StoredGroup>, StoreError>;
    /// Upsert (insert or replace) the group's snapshot.
    async fn save(&self, key: &GroupKey, group: &StoredGroup) -> Result<(), StoreError>;
    /// chat ids stored for one provider+tenant (for reconciliation), sorted.
    async fn chat_ids(&self, provider: Provider, tenant: &str) -> Result<Vec<String>, StoreError>;
    /// Cheap reachability check for /readyz.
    async fn ping(&self) -> Result<(), StoreError>;
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
}

/// The columns `GroupRow` reads, for SELECTs.
const GROUP_COLUMNS: &str =
    "name, owner, notice, create_time, member_version, dismissed, admins, members, updated_at_ms";

impl GroupRow {
    fn encode(key: &GroupKey, group: &StoredGroup) -> Result<Self, StoreError> {
        let s = &group.snapshot;
        if s.chat_id != key.chat_id {
            return Err(StoreError::KeyMismatch { key: key.chat_id.clone(), snapshot: s.chat_id.clone() });
        }
        // serde_json fails only on maps with non-string keys or a failing custom `Serialize`;
        // these are vectors of strings and of a derived struct, so it cannot fail here.
        const INFALLIBLE: &str = "admins and members always serialise to JSON";
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
        })
    }
}

/// Wraps a backend to time every operation, so the backends need not repeat it.
struct Metered<S>(S);

#[async_trait]
impl<S: SnapshotStore> SnapshotStore for Metered<S> {
    async fn load(&self, key: &GroupKey) -> Result<Option<StoredGroup>, StoreError> {
        timed("load", self.0.load(key)).await
    }

    async fn save(&self, key: &GroupKey, group: &StoredGroup) -> Result<(), StoreError> {
        timed("save", self.0.save(key, group)).await
    }

    async fn chat_ids(&self, provider: Provider, tenant: &str) -> Result<Vec<String>, StoreError> {
        timed("chat_ids", self.0.chat_ids(provider, tenant)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        timed("ping", self.0.ping()).await
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
}
